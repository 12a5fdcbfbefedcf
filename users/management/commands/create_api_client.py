"""Create an API client account in a role (or give an existing one a new token) and print the
token, once, alone on the last line of stdout (scripts can take it with `tail -n1`)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from users.access import ROLES
from users.services import ApiClientRefused, api_client_create


class Command(BaseCommand):
    help = "Create an API client (reader or writer) or give it a new token; print the token."

    def add_arguments(self, parser):
        parser.add_argument("name", help="account name (created if new)")
        parser.add_argument("--role", required=True, choices=sorted(ROLES))
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help=f"days the token is valid (default {settings.API_TOKEN_EXPIRES_DAYS}; 0: never)",
        )

    def handle(self, *args, name: str, role: str, expires_days: int | None, **options):
        if not name.strip() or len(name) > 150:
            raise CommandError("the name must be 1 to 150 characters")
        if expires_days is not None and expires_days < 0:
            raise CommandError("--expires-days must be 0 (never) or more")
        try:
            account, token = api_client_create(name=name, role=role, expires_days=expires_days)
        except ApiClientRefused as refused:
            raise CommandError(str(refused)) from None
        days = settings.API_TOKEN_EXPIRES_DAYS if expires_days is None else expires_days
        expiry = f"expires in {days} days" if days else "never expires"
        self.stderr.write(
            f"API client {account.username!r} ({role}): new token, {expiry}. It is shown only "
            "now; use it as 'Authorization: Token <token>'. Revoke with "
            f"`manage.py revoke_api_tokens {account.username}`."
        )
        self.stdout.write(token)
