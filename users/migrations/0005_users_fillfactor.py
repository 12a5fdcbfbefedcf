"""Leave 30% of each users page free, so updates can be HOT (heap-only tuple) updates.

Re-ingesting a file rewrites every row it names, usually with the same indexed values. With
free room on the page PostgreSQL keeps the new version there and touches none of the indexes,
trigram GIN indexes included; on full pages every update writes every index again. Measured on
500k users re-ingested: 28k rows/s at the default fillfactor (1% HOT), 41k at 70.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("users", "0004_trigram_indexes_for_ingest")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE users_user SET (fillfactor = 70)",
            "ALTER TABLE users_user RESET (fillfactor)",
        ),
    ]
