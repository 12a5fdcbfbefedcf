"""Local access for `make run`: an `admin` account for the admin site with a random password,
and a `local-writer` API client with a token. Prints both (to stdout, or to --output).

Running it again keeps the admin's password (it is printed only when the account is created, or
with --reset-password, which `make reset-admin` runs). With --token-file the writer's token is
kept there (mode 600; .local/ is gitignored) and used again while it is valid, so a client set
up with it keeps working across runs: the database holds only the token's digest, so the file is
the only place the token can come back from. Without the file, or once its token is revoked or
near its expiry, a new token replaces the writer's tokens, and the output says so. With
--only-first (Compose's `setup`, which runs on every start of the stack) a second run changes
nothing: the token a client was given keeps working, and no new credentials reach the log.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from users.models import ApiToken
from users.selectors import api_token_find
from users.services import api_client_create, api_tokens_revoke

WRITER = "local-writer"
TOKEN_DAYS = 30
# A kept token is replaced once it has less than this left: it must last the session.
TOKEN_MIN_LEFT = timedelta(days=1)


def _private_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


class Command(BaseCommand):
    help = "Create the local admin (random password) and a writer API token; print them."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("LOCAL_ADMIN_USER", "admin"))
        parser.add_argument("--port", default=str(settings.PORT))
        parser.add_argument("--output", help="write the credentials to this file (mode 600)")
        parser.add_argument(
            "--only-first",
            action="store_true",
            help="if the admin account exists already, change nothing and print nothing secret",
        )
        parser.add_argument(
            "--token-file",
            help="keep the writer's token in this file (mode 600) and use it again while valid",
        )
        parser.add_argument(
            "--reset-password",
            action="store_true",
            help="give the admin a new random password (and print it)",
        )

    def handle(self, *args, username: str, port: str, output: str | None,
               token_file: str | None, reset_password: bool, only_first: bool,
               **options):  # fmt: skip
        if only_first and get_user_model().objects.filter(username=username).exists():
            self.stdout.write(f"account {username!r} exists: nothing changed")
            return
        password = self._admin(username, reset_password=reset_password)
        token, token_note = self._writer_token(Path(token_file) if token_file else None)
        base = f"http://localhost:{port}"
        auth = f"-H 'Authorization: Token {token}'"
        login = (
            f"user {username!r}, password {password!r}"
            if password
            else f"user {username!r}; password as set before "
            f"(a new one: make reset-admin, or manage.py changepassword {username})"
        )
        text = (
            f"  admin:   {base}/admin/  ({login})\n"
            f"  token:   {token}  ({token_note})\n"
            f"  read:    curl {base}/users {auth}\n"
            f"  create:  curl -X POST {base}/users {auth} "
            "-H 'Content-Type: application/json' "
            '-d \'{"first_name":"Ada","last_name":"Lovelace","email_address":"ada@example.com"}\'\n'
            f"  docs:    {base}/api/docs/\n"
        )
        if output:
            _private_write(Path(output), text)
            self.stdout.write(f"local credentials written to {output}")
        else:
            self.stdout.write(text.rstrip("\n"))

    def _admin(self, username: str, *, reset_password: bool) -> str | None:
        """Make sure the admin exists; its new password, or None when it keeps its own."""
        account, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if not (created or reset_password):
            return None
        password = secrets.token_urlsafe(12)
        account.set_password(password)
        account.is_active = account.is_staff = account.is_superuser = True
        account.save()
        return password

    def _writer_token(self, path: Path | None) -> tuple[str, str]:
        """The writer's token and a note on it: the kept one while it is valid, else a new one
        (which revokes the others)."""
        if path is not None and path.is_file():
            kept = path.read_text().strip()
            stored = api_token_find(token=kept, account_name=WRITER)
            if stored is not None and _lasts(stored):
                until = f"until {stored.expires_at:%Y-%m-%d}" if stored.expires_at else "no expiry"
                return kept, f"writer, kept from the last run, {until}"
        revoked = api_tokens_revoke(name=WRITER)
        _, token = api_client_create(name=WRITER, role="writer", expires_days=TOKEN_DAYS)
        if path is not None:
            _private_write(path, token + "\n")
        note = f"writer, {TOKEN_DAYS} days; NEW"
        return token, note + (": the previous token is revoked" if revoked else "")


def _lasts(token: ApiToken) -> bool:
    return token.expires_at is None or token.expires_at - timezone.now() >= TOKEN_MIN_LEFT
