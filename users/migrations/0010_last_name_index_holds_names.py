"""users_upper_last_name_id_idx becomes users_last_name_names_idx: the same keys, and both names
held beside them, so a `name` substring is checked along the last-name order without reading
the table (users.selectors.user_name_walk).

Built concurrently before the old index is dropped: reads and writes go on meanwhile (about
7 s at 5M users), and no query is left without an index for the last-name order."""

import django.db.models.functions.text
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("users", "0009_email_blind_indexes"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="user",
            index=models.Index(
                django.db.models.functions.text.Upper("last_name"),
                models.F("id"),
                include=("first_name", "last_name"),
                name="users_last_name_names_idx",
            ),
        ),
        RemoveIndexConcurrently(
            model_name="user",
            name="users_upper_last_name_id_idx",
        ),
    ]
