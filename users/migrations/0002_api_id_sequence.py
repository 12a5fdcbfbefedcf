"""The sequence that hands out ids to users created through the API.

It starts at users.validation.API_ID_START, above every id an import may carry, so API-created
and imported users never collide whatever order they arrive in.
"""

from django.db import migrations

from users.validation import API_ID_START

SEQUENCE = "users_user_api_id_seq"


class Migration(migrations.Migration):
    dependencies = [("users", "0001_initial")]

    operations = [
        migrations.RunSQL(
            f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE} START WITH {API_ID_START} "
            f"MINVALUE {API_ID_START} OWNED BY users_user.id",
            f"DROP SEQUENCE IF EXISTS {SEQUENCE}",
        ),
    ]
