"""Admin login: after AXES_FAILURE_LIMIT failures for one account from one address, that pair
is refused even with the right password, until the cool-off passes or an operator unlocks it;
the address comes from the socket unless a trusted proxy forwards it. Passwords set through
the admin are checked by Django's standard validators."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.utils import timezone

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = secrets.token_urlsafe(16)


@pytest.fixture
def staff(django_user_model, plain_static_storage, settings):
    """Two staff accounts with the same strong password (hashed cheaply: these tests check
    dozens of passwords, and what is under test is the lockout, not the hash)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    for name in ("ada", "bob"):
        django_user_model.objects.create_superuser(name, password=PASSWORD)


def log_in(client, username: str, password: str, address: str = "198.51.100.1", **headers):
    client.cookies.clear()
    response = client.post(
        LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address, **headers
    )
    return response


def logged_in(response) -> bool:
    return response.status_code == 302 and response.url == "/admin/"


def fail(client, times: int, username: str = "ada", **kwargs) -> list[int]:
    """Log in with a wrong password `times` times; the statuses (429 once the pair is locked)."""
    return [log_in(client, username, "wrong", **kwargs).status_code for _ in range(times)]


@pytest.mark.django_db
def test_five_failures_lock_the_account_at_that_address_even_for_the_right_password(client, staff):
    fail(client, 4)
    assert logged_in(log_in(client, "ada", PASSWORD))  # four are allowed, and reset on success

    assert fail(client, 5) == [200, 200, 200, 200, 429]  # the fifth failure locks
    refused = log_in(client, "ada", PASSWORD)

    assert refused.status_code == 429
    assert b"too many login attempts" in refused.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_the_lock_is_per_account_and_address(client, staff):
    fail(client, 5, address="198.51.100.1")

    assert logged_in(log_in(client, "ada", PASSWORD, address="198.51.100.2"))
    assert logged_in(log_in(client, "bob", PASSWORD, address="198.51.100.1"))
    assert log_in(client, "ada", PASSWORD, address="198.51.100.1").status_code == 429


@pytest.mark.django_db
def test_the_limit_and_cool_off_are_settings(client, staff, settings):
    settings.AXES_FAILURE_LIMIT = 2
    fail(client, 2)
    assert log_in(client, "ada", PASSWORD).status_code == 429

    # Past the cool-off (15 minutes by default) the pair may log in again.
    earlier = timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    AccessAttempt.objects.update(attempt_time=earlier)
    assert logged_in(log_in(client, "ada", PASSWORD))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "unlock",
    [
        lambda: call_command("axes_reset_username", "ada"),
        lambda: call_command("axes_reset_ip", "198.51.100.1"),
        lambda: call_command("axes_reset"),
        lambda: AccessAttempt.objects.filter(username="ada").delete(),  # the admin's delete
    ],
    ids=["axes_reset_username", "axes_reset_ip", "axes_reset", "admin"],
)
def test_an_operator_unlocks_the_account(client, staff, unlock):
    fail(client, 5)
    assert log_in(client, "ada", PASSWORD).status_code == 429

    unlock()

    assert logged_in(log_in(client, "ada", PASSWORD))


@pytest.mark.django_db
def test_x_forwarded_for_from_an_untrusted_peer_changes_nothing(client, staff):
    for n in range(5):  # a new forged address on every try
        log_in(client, "ada", "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")

    refused = log_in(client, "ada", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.99")

    assert refused.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.1"}


@pytest.mark.django_db
def test_behind_a_trusted_proxy_clients_are_told_apart_by_x_forwarded_for(client, staff, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    proxy = {"address": "10.0.0.2"}
    fail(client, 5, **proxy, HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5")

    locked = log_in(client, "ada", PASSWORD, **proxy, HTTP_X_FORWARDED_FOR="203.0.113.5")
    other = log_in(client, "ada", PASSWORD, **proxy, HTTP_X_FORWARDED_FOR="203.0.113.6")

    assert locked.status_code == 429
    assert logged_in(other)
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.5"}


@pytest.mark.django_db
def test_the_admin_refuses_a_weak_password(client, staff, django_user_model):
    assert logged_in(log_in(client, "ada", PASSWORD))
    for weak, message in [
        ("admin", b"This password is too short"),
        ("password123", b"This password is too common"),
        ("48151623429", b"This password is entirely numeric"),
        ("carol-smith", b"The password is too similar to the username"),
    ]:
        response = client.post(
            "/admin/auth/user/add/",
            {
                "username": "carol-smith",
                "password1": weak,
                "password2": weak,
                "usable_password": "true",
            },
            REMOTE_ADDR="198.51.100.1",
        )
        assert response.status_code == 200, weak
        assert message in response.content, weak
    assert not django_user_model.objects.filter(username="carol-smith").exists()
