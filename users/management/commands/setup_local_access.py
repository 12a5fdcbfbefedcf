"""Local access for `make run`: an `admin` account for the admin site with a random password,
and a `local-writer` API client with a fresh token. Prints both (to stdout, or to --output).

Running it again keeps the admin's password (it is printed only when the account is created;
`manage.py changepassword admin` sets a new one) and replaces the local writer's token. With
--only-first (Compose's `setup`, which runs on every start of the stack) a second run changes
nothing: the token a client was given keeps working, and no new credentials reach the log.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from users.services import api_client_create, api_tokens_revoke

WRITER = "local-writer"


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

    def handle(
        self, *args, username: str, port: str, output: str | None, only_first: bool, **options
    ):
        password = secrets.token_urlsafe(12)
        account, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if only_first and not created:
            self.stdout.write(f"account {username!r} exists: nothing changed")
            return
        if created:
            account.set_password(password)
            account.save(update_fields=["password"])
        api_tokens_revoke(name=WRITER)
        _, token = api_client_create(name=WRITER, role="writer", expires_days=30)
        base = f"http://localhost:{port}"
        auth = f"-H 'Authorization: Token {token}'"
        login = (
            f"user {username!r}, password {password!r}"
            if created
            else f"user {username!r}; password as set before "
            f"(new one: .venv/bin/python manage.py changepassword {username})"
        )
        text = (
            f"  admin:   {base}/admin/  ({login})\n"
            f"  token:   {token}  (writer, 30 days)\n"
            f"  read:    curl {base}/users {auth}\n"
            f"  create:  curl -X POST {base}/users {auth} "
            "-H 'Content-Type: application/json' "
            '-d \'{"first_name":"Ada","last_name":"Lovelace","email_address":"ada@example.com"}\'\n'
            f"  docs:    {base}/api/docs/\n"
        )
        if output:
            path = Path(output)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.chmod(0o600)
            path.write_text(text)
            self.stdout.write(f"local credentials written to {output}")
        else:
            self.stdout.write(text.rstrip("\n"))
