from django.apps import AppConfig
from django.db.models.signals import post_migrate


class IngestConfig(AppConfig):
    name = "ingest"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ingest import checks  # noqa: F401 - registers the system check
        from ingest.services import failed_batches_reencrypt
        from users.email_rotation import token_holders

        post_migrate.connect(_restore_users_indexes, sender=self)
        # Failed batches keep their addresses encrypted: a key rotation re-encrypts them too.
        if failed_batches_reencrypt not in token_holders:
            token_holders.append(failed_batches_reencrypt)


def _restore_users_indexes(*, apps=None, using="default", **_) -> None:
    """`migrate` leaves the users table with every index its migrations declare, whatever a
    crashed bulk import left out (built from the migrated state, not today's models)."""
    from ingest.indexes import index_lock, users_indexes_build, users_indexes_status

    try:
        if using != "default" or users_indexes_status(apps=apps).complete:
            return
    except LookupError:  # the users app is not migrated (yet)
        return
    with index_lock():
        users_indexes_build(apps=apps)
