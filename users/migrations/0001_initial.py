"""The users table, its indexes, the API id sequence, stale cache notes and API tokens.

Besides what the models declare: pg_trgm for the trigram indexes of the substring filters;
the sequence API-created users take their ids from, starting at 10^15 (users.validation's
API_ID_START, written here as the literal it was when this migration was made), above every id
an import may carry; and a fillfactor of 70 on the users table, so that re-ingested rows are
mostly HOT updates that touch no index (measured on 500k users re-ingested: 28k rows/s at the
default fillfactor, 41k at 70).
"""

import django.contrib.postgres.indexes
import django.db.models.deletion
import django.db.models.functions.text
from django.conf import settings
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models

API_ID_SEQUENCE = "users_user_api_id_seq"
API_ID_START = 1_000_000_000_000_000


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        TrigramExtension(),
        migrations.CreateModel(
            name='StaleCacheEntry',
            fields=[
                ('user_id', models.BigIntegerField(primary_key=True, serialize=False)),
                ('noted_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'verbose_name_plural': 'stale cache entries',
            },
        ),
        migrations.CreateModel(
            name='ApiToken',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('digest', models.CharField(editable=False, max_length=64, unique=True)),
                ('prefix', models.CharField(editable=False, max_length=12)),
                ('label', models.CharField(blank=True, max_length=100)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('expires_at', models.DateTimeField(blank=True, null=True)),
                ('account', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'API token',
            },
        ),
        migrations.CreateModel(
            name='User',
            fields=[
                ('id', models.BigIntegerField(primary_key=True, serialize=False)),
                ('first_name', models.CharField(blank=True, max_length=255)),
                ('last_name', models.CharField(blank=True, max_length=255)),
                ('email_address', models.CharField(max_length=254)),
                ('created_at', models.DateTimeField()),
                ('deleted_at', models.DateTimeField(blank=True, null=True)),
                ('merged_at', models.DateTimeField(blank=True, null=True)),
                ('parent_user_id', models.BigIntegerField(blank=True, db_index=True, null=True)),
                ('source_run_id', models.BigIntegerField(blank=True, editable=False, null=True)),
                ('source_line', models.IntegerField(blank=True, editable=False, null=True)),
            ],
            options={
                'ordering': ['id'],
                'indexes': [models.Index(fields=['created_at'], name='users_created_at_idx'), models.Index(fields=['last_name', 'id'], name='users_last_name_id_idx'), django.contrib.postgres.indexes.GinIndex(django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Upper('email_address'), name='gin_trgm_ops'), name='users_email_trgm'), django.contrib.postgres.indexes.GinIndex(django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Upper(django.db.models.functions.text.Concat('first_name', models.Value(' '), 'last_name')), name='gin_trgm_ops'), name='users_full_name_trgm')],
            },
        ),
        migrations.RunSQL(
            f"CREATE SEQUENCE IF NOT EXISTS {API_ID_SEQUENCE} START WITH {API_ID_START} "
            f"MINVALUE {API_ID_START} OWNED BY users_user.id",
            f"DROP SEQUENCE IF EXISTS {API_ID_SEQUENCE}",
        ),
        migrations.RunSQL(
            "ALTER TABLE users_user SET (fillfactor = 70)",
            "ALTER TABLE users_user RESET (fillfactor)",
        ),
    ]
