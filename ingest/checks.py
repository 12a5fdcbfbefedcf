"""System checks of the ingest app: `manage.py check --database default` (and `migrate`)
report a users table missing indexes the models declare."""

from __future__ import annotations

from django.core.checks import Tags, Warning, register
from django.db import DatabaseError


def users_indexes_health() -> dict[str, object]:
    """For health endpoints: {"status": "ok" | "degraded", "missing": [...], "invalid": [...],
    "bulk_run": id of the bulk import building them, or None}. Touches the database."""
    from ingest.bulk import ingest_bulk_run_loading
    from ingest.indexes import users_indexes_status

    status = users_indexes_status()
    bulk_run = None if status.complete else ingest_bulk_run_loading()
    return {
        "status": "ok" if status.complete else "degraded",
        "missing": list(status.missing),
        "invalid": list(status.invalid),
        "bulk_run": bulk_run,
    }


def users_indexes_degraded() -> bool:
    """For /readyz (settings.READINESS_DEGRADED_CHECKS): whether an index the model declares is
    missing or invalid while no bulk import is loading (one that is builds them when it ends;
    a worker builds the others within INGEST_INDEX_CHECK_INTERVAL). On a connection of its
    own, closed after: the probe's threads hold none between two checks."""
    from django.db import connection

    try:
        health = users_indexes_health()
        return health["status"] != "ok" and health["bulk_run"] is None
    finally:
        connection.close()


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
