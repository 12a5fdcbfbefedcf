"""The local access set-up command used by `make run`: a random admin password, a writer token."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from users.access import token_digest
from users.models import ApiToken

pytestmark = pytest.mark.django_db


def run(**options) -> str:
    out = StringIO()
    call_command("setup_local_access", stdout=out, **options)
    return out.getvalue()


def token_in(text: str) -> str:
    return next(word for word in text.split() if word.startswith("vw_"))


def test_creates_admin_with_random_password_and_a_writer_token():
    first = run(username="local")
    admin = get_user_model().objects.get(username="local")
    assert admin.is_superuser and admin.is_staff
    password = first.split("password '")[1].split("'")[0]
    assert len(password) >= 16 and admin.check_password(password)
    assert not admin.check_password("admin")
    token = token_in(first)
    stored = ApiToken.objects.get(digest=token_digest(token))
    assert stored.account.username == "local-writer"
    assert set(stored.account.groups.values_list("name", flat=True)) == {"writer"}
    assert "Authorization: Token" in first


def test_running_again_keeps_the_password_and_without_a_token_file_says_the_token_changed():
    first, second = run(username="local"), run(username="local")
    assert "password as set before" in second and "make reset-admin" in second
    assert token_in(first) != token_in(second)
    assert "NEW: the previous token is revoked" in second
    assert not ApiToken.objects.filter(digest=token_digest(token_in(first))).exists()
    assert get_user_model().objects.filter(username="local").count() == 1


def test_a_kept_token_is_used_again_while_it_is_valid(tmp_path):
    """`make run` keeps the writer's token in .local/: a second run prints the same token,
    still valid (every run used to revoke the previous one)."""
    token_file = tmp_path / "writer_token"
    first = run(username="local", token_file=str(token_file))
    assert token_file.read_text().strip() == token_in(first)
    assert token_file.stat().st_mode & 0o777 == 0o600
    second = run(username="local", token_file=str(token_file))
    assert token_in(second) == token_in(first)
    assert "kept from the last run" in second
    assert ApiToken.objects.filter(digest=token_digest(token_in(first))).exists()


@pytest.mark.parametrize("spoil", ["revoke", "expire", "garble"])
def test_a_kept_token_no_longer_valid_is_replaced(tmp_path, spoil):
    token_file = tmp_path / "writer_token"
    first = token_in(run(username="local", token_file=str(token_file)))
    stored = ApiToken.objects.filter(digest=token_digest(first))
    if spoil == "revoke":
        stored.delete()
    elif spoil == "expire":
        stored.update(expires_at=timezone.now() + timedelta(hours=1))  # would not last the day
    else:
        token_file.write_text("not a token\n")
    second = run(username="local", token_file=str(token_file))
    assert token_in(second) != first and "NEW" in second
    assert token_file.read_text().strip() == token_in(second)
    assert ApiToken.objects.filter(digest=token_digest(token_in(second))).exists()


def test_reset_password_prints_a_new_password_that_works():
    first = run(username="local")
    old = first.split("password '")[1].split("'")[0]
    reset = run(username="local", reset_password=True)
    new = reset.split("password '")[1].split("'")[0]
    admin = get_user_model().objects.get(username="local")
    assert new != old and admin.check_password(new) and not admin.check_password(old)


def test_credentials_can_go_to_a_private_file(tmp_path):
    path = tmp_path / "local" / "credentials"
    assert str(path) in run(username="local", output=str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    assert "vw_" in path.read_text()


def test_only_first_changes_nothing_once_the_admin_exists(tmp_path):
    path = tmp_path / "credentials"
    first = run(username="local", only_first=True, output=str(path))
    token = token_in(path.read_text())
    path.unlink()

    second = run(username="local", only_first=True, output=str(path))

    assert "exists: nothing changed" in second and "vw_" not in second
    assert not path.exists()
    assert str(path) in first
    stored = ApiToken.objects.get(digest=token_digest(token))  # the first token still works
    assert ApiToken.objects.filter(account=stored.account).count() == 1
