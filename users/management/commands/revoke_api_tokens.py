"""Revoke an API client's tokens: all of them, or the one whose prefix (as the admin lists it)
is given. Takes effect within API_TOKEN_CACHE_SECONDS everywhere, at once on this database."""

from django.core.management.base import BaseCommand, CommandError

from users.services import api_tokens_revoke


class Command(BaseCommand):
    help = "Revoke an API client's tokens (all, or the one with --prefix)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="account name")
        parser.add_argument("--prefix", help="only the token starting with this (see the admin)")

    def handle(self, *args, name: str, prefix: str | None, **options):
        revoked = api_tokens_revoke(name=name, prefix=prefix)
        if not revoked:
            raise CommandError(
                f"no token of {name!r}" + (f" starts with {prefix!r}" if prefix else "")
            )
        self.stdout.write(f"revoked {revoked} token(s) of {name!r}")
