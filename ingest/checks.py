"""System checks of the ingest app: `manage.py check --database default` (and `migrate`)
report a users table missing indexes the models declare."""

from __future__ import annotations

from django.core.checks import Tags, Warning, register
from django.db import DatabaseError


def users_indexes_health() -> dict[str, object]:
    """For health endpoints: {"status": "ok" | "degraded", "missing": [...], "invalid": [...],
    "bulk_run": id of the bulk import building them, or None}. Touches the database."""
    from ingest.indexes import users_indexes_status
    from ingest.services import ingest_bulk_run_loading

    status = users_indexes_status()
    bulk_run = None if status.complete else ingest_bulk_run_loading()
    return {
        "status": "ok" if status.complete else "degraded",
        "missing": list(status.missing),
        "invalid": list(status.invalid),
        "bulk_run": bulk_run,
    }


@register(Tags.database)
def check_users_indexes(app_configs=None, databases=None, **kwargs) -> list[Warning]:
    if not databases or "default" not in databases:
        return []
    try:
        health = users_indexes_health()
    except DatabaseError:  # not migrated yet, or no database: other checks say so
        return []
    if health["status"] == "ok":
        return []
    names = ", ".join(health["missing"] + health["invalid"])
    if health["bulk_run"]:
        hint = f"ingest run {health['bulk_run']} is a bulk import: they are built when it ends."
    else:
        hint = "Run `manage.py migrate`, or start a worker, to build them."
    return [
        Warning(
            f"users_user is missing or has invalid indexes: {names} (searches are slow)",
            hint=hint,
            id="ingest.W001",
        )
    ]
