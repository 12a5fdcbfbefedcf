"""The ORM write path, kept only to be measured against users.services' COPY + merge
(bench_ingest.py): Django's bulk_create(update_conflicts=True). It cannot skip older lines, so
it does not keep "later line wins" across out-of-order batches; the product never uses it."""

from __future__ import annotations

from users.columns import SOURCE_COLUMNS, USER_COLUMNS
from users.models import User


def orm_upsert(*, run_id: int, rows) -> int:
    """Upsert SourcedUser rows with bulk_create; return how many were sent."""
    # One row per id (the later line), as users_upsert does: PostgreSQL refuses to update a
    # row twice in one statement.
    rows = list({row.user.id: row for row in rows}.values())
    User.objects.bulk_create(
        [
            User(
                **{name: getattr(row.user, name) for name in USER_COLUMNS},
                source_run_id=run_id,
                source_line=row.line,
            )
            for row in rows
        ],
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=[name for name in (*USER_COLUMNS, *SOURCE_COLUMNS) if name != "id"],
        batch_size=1000,
    )
    return len(rows)
