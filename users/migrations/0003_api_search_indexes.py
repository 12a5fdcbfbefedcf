"""Indexes behind the users API: trigram GIN for the name/email substring filters, and
(last_name, id) for keyset pagination ordered by last name."""

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import TrigramExtension
import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('users', '0002_api_id_sequence'),
    ]

    operations = [
        # pg_trgm: the substring filters of GET /users use trigram GIN indexes.
        TrigramExtension(),
        migrations.AddIndex(
            model_name='user',
            index=models.Index(fields=['last_name', 'id'], name='users_last_name_id_idx'),
        ),
        migrations.AddIndex(
            model_name='user',
            index=django.contrib.postgres.indexes.GinIndex(django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Upper('first_name'), name='gin_trgm_ops'), name='users_first_name_trgm'),
        ),
        migrations.AddIndex(
            model_name='user',
            index=django.contrib.postgres.indexes.GinIndex(django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Upper('last_name'), name='gin_trgm_ops'), name='users_last_name_trgm'),
        ),
        migrations.AddIndex(
            model_name='user',
            index=django.contrib.postgres.indexes.GinIndex(django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Upper('email_address'), name='gin_trgm_ops'), name='users_email_trgm'),
        ),
        migrations.AddIndex(
            model_name='user',
            index=django.contrib.postgres.indexes.GinIndex(django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Upper(django.db.models.functions.text.Concat('first_name', models.Value(' '), 'last_name')), name='gin_trgm_ops'), name='users_full_name_trgm'),
        ),
    ]
