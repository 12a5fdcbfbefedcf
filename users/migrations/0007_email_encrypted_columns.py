"""The email address encrypted at rest (users.fields), step 1 of 3: the columns. The plaintext
trigram index goes first, so the encrypting batches of 0008 do not maintain it; the blind
indexes are built by 0009, once every row has its values."""

import django.contrib.postgres.fields
from django.db import migrations, models

import users.fields


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0006_created_at_id_index"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="user", name="users_email_trgm"),
        migrations.AddField(
            model_name="user",
            name="email_digest",
            field=models.BinaryField(null=True),
        ),
        migrations.AddField(
            model_name="user",
            name="email_index_key",
            field=models.CharField(editable=False, max_length=16, null=True),
        ),
        migrations.AddField(
            model_name="user",
            name="email_ngrams",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.IntegerField(), editable=False, null=True, size=None
            ),
        ),
        migrations.AlterField(
            model_name="user",
            name="email_address",
            field=users.fields.EncryptedEmailField(),
        ),
    ]
