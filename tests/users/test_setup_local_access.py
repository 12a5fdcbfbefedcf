"""The local admin + API token set-up command used by `make run`."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def run(**options) -> str:
    out = StringIO()
    call_command("setup_local_access", stdout=out, **options)
    return out.getvalue()


def test_creates_admin_and_token_once(settings):
    settings.DEBUG = True
    first = run(username="local")
    second = run(username="local")
    user = get_user_model().objects.get(username="local")
    assert user.is_superuser and user.is_staff and user.check_password("admin")
    token = Token.objects.get(user=user).key
    assert token in first and token in second
    assert "Authorization: Token" in first
    assert "exists" in second
    assert get_user_model().objects.filter(username="local").count() == 1


def test_default_password_refused_with_debug_off(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="default password"):
        run(username="local")
    assert run(username="local", password="s3cret-enough").startswith("Local admin")
