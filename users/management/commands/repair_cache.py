"""`python manage.py repair_cache`: delete Redis entries noted stale during a Redis outage, and
send the user.deleted events the stream's history missed then."""

from django.core.management.base import BaseCommand, CommandError

from users.services import cache_repair_stale, stream_redactions_apply


class Command(BaseCommand):
    help = (
        "Delete the Redis entries of users written while Redis was unreachable, so reads "
        "refill them from PostgreSQL, and send the deletes the event stream's history missed "
        "(so replays leave those users out). Ingest workers also do this before each batch."
    )

    def handle(self, *args, **options) -> None:
        repaired, left = cache_repair_stale()
        redacted, unredacted = stream_redactions_apply()
        if left or unredacted:
            raise CommandError(
                f"{repaired} stale entries deleted, {left} left; {redacted} deletes sent to the "
                f"event stream, {unredacted} left: is Redis reachable?"
            )
        self.stdout.write(f"{repaired} stale cache entries deleted; none left")
        self.stdout.write(f"{redacted} deletes sent to the event stream; none left")
