"""Create (or reuse) a local admin account and its API token, and print how to use them.

For local development only (`make run` calls it): the password defaults to "admin" unless
--password or LOCAL_ADMIN_PASSWORD says otherwise. Running it again changes nothing.
"""

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create a local admin account and API token (idempotent) and print how to use them."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("LOCAL_ADMIN_USER", "admin"))
        parser.add_argument("--password", default=os.environ.get("LOCAL_ADMIN_PASSWORD", "admin"))
        parser.add_argument("--port", default=str(settings.PORT))

    def handle(self, *args, username: str, password: str, port: str, **options):
        if not settings.DEBUG and password == "admin":
            raise CommandError(
                "refusing to create an account with the default password while DJANGO_DEBUG "
                "is off; pass --password or set LOCAL_ADMIN_PASSWORD"
            )
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(password)
            user.save(update_fields=["password"])
        token, _ = Token.objects.get_or_create(user=user)
        base = f"http://localhost:{port}"
        auth = f"-H 'Authorization: Token {token.key}'"
        state = "created" if created else "exists (password unchanged)"
        self.stdout.write(
            f"Local admin {username!r} {state}.\n"
            f"  admin:       {base}/admin/  (user {username!r}"
            + (f", password {password!r})\n" if created else ")\n")
            + f"  API token:   {token.key}\n"
            f"  create:      curl -X POST {base}/users {auth} "
            "-H 'Content-Type: application/json' "
            '-d \'{"first_name":"Ada","last_name":"Lovelace","email_address":"ada@example.com"}\'\n'
            f"  delete:      curl -X DELETE {base}/users/<id> {auth}\n"
            f"  docs:        {base}/api/docs/"
        )
