"""`python manage.py repair_cache`: delete Redis entries noted stale during a Redis outage."""

from django.core.management.base import BaseCommand, CommandError

from users.services import cache_repair_stale


class Command(BaseCommand):
    help = (
        "Delete the Redis entries of users written while Redis was unreachable, so reads "
        "refill them from PostgreSQL. Ingest workers also do this before each batch."
    )

    def handle(self, *args, **options) -> None:
        repaired, left = cache_repair_stale()
        if left:
            raise CommandError(
                f"{repaired} stale entries deleted, {left} left: is Redis reachable?"
            )
        self.stdout.write(f"{repaired} stale cache entries deleted; none left")
