"""The email address encrypted at rest, step 3 of 3: the blind indexes (users.email_index) that
serve the `email_address` and `email` filters."""

import django.contrib.postgres.indexes
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0008_encrypt_email_addresses"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="user",
            index=models.Index(fields=["email_digest"], name="users_email_digest_idx"),
        ),
        migrations.AddIndex(
            model_name="user",
            index=django.contrib.postgres.indexes.GinIndex(
                fields=["email_ngrams"], name="users_email_ngrams_gin"
            ),
        ),
    ]
