"""Who may do what (users.access): roles, tokens, their cache, revocation and expiry, through
the API with Django's test client (the fast read path under a real server: test_asgi.py)."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from users import cache
from users.access import Principal, token_digest
from users.models import ApiToken, User
from users.services import api_client_create, api_tokens_revoke

pytestmark = pytest.mark.django_db

NEW_USER = {"first_name": "Ada", "last_name": "Lovelace", "email_address": "ada@example.com"}


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


# Who x path -> status: every path asks users.refusals.refusal(), so every path answers alike.
# "anonymous" sends nothing; "public" is anonymous in public-read mode; the others hold a token
# of an account in that role ("nobody": no permission at all).
ACCESS = [
    ("anonymous", "GET", "/users", 401),
    ("anonymous", "GET", "/users/{id}", 401),
    ("anonymous", "GET", "/users?name=a", 401),
    ("anonymous", "POST", "/users", 401),
    ("anonymous", "DELETE", "/users/{id}", 401),
    ("anonymous", "GET", "/users/sse", 401),
    ("anonymous", "GET", "/users/live", 302),
    ("public", "GET", "/users", 200),
    ("public", "GET", "/users/{id}", 200),
    ("public", "POST", "/users", 401),
    ("public", "DELETE", "/users/{id}", 401),
    ("public", "GET", "/users/live", 200),
    ("nobody", "GET", "/users", 403),
    ("nobody", "GET", "/users/{id}", 403),
    ("nobody", "GET HTML", "/users/{id}", 403),
    ("nobody", "POST", "/users", 403),
    ("nobody", "DELETE", "/users/{id}", 403),
    ("nobody", "GET", "/users/sse", 403),
    ("nobody", "GET", "/users/live", 403),
    ("reader", "GET", "/users", 200),
    ("reader", "GET", "/users/{id}", 200),
    ("reader", "POST", "/users", 403),
    ("reader", "DELETE", "/users/{id}", 403),
    ("reader", "GET", "/users/live", 200),
    ("writer", "GET", "/users", 200),
    ("writer", "GET", "/users/{id}", 200),
    ("writer", "POST", "/users", 201),
    ("writer", "DELETE", "/users/{id}", 204),
]


@pytest.mark.django_db(transaction=True)  # the stream's view closes its database connection
@pytest.mark.parametrize(("who", "method", "path", "expected"), ACCESS)
def test_who_may_do_what_on_every_path(
    who, method, path, expected, api_token, user_factory, settings, plain_static_storage
):
    user = user_factory()
    client = APIClient()
    if who == "public":
        settings.API_READS_REQUIRE_AUTH = False
    elif who != "anonymous":
        client.credentials(
            HTTP_AUTHORIZATION=f"Token {api_token(None if who == 'nobody' else who)}"
        )
    path = path.format(id=user.id)
    if method == "POST":
        response = client.post(path, NEW_USER, format="json")
    elif method == "DELETE":
        response = client.delete(path)
    else:
        html = {"HTTP_ACCEPT": "text/html"} if method == "GET HTML" else {}
        response = client.get(path, **html)

    assert response.status_code == expected
    if expected == 401:
        assert response.json() == {"detail": "Authentication credentials were not provided."}
        assert response["WWW-Authenticate"] == 'Token realm="api"'
    elif expected == 403 and method != "GET HTML" and path != "/users/live":
        assert response.json() == {"detail": "You do not have permission to perform this action."}
    elif expected == 302:
        assert response["Location"] == "/admin/login/?next=/users/live"
    elif expected == 201:
        created = response.json()["id"]
        assert client.get(f"/users/{created}").status_code == 200
    if method == "DELETE":  # a refused delete deletes nothing
        assert User.objects.filter(id=user.id).exists() == (expected != 204)


BEARER_DETAIL = (
    "Authorization scheme 'Bearer' is not accepted here: send 'Authorization: Token <token>'."
)


def test_a_bearer_token_is_told_to_use_the_token_scheme(user_factory, api_token):
    user = user_factory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token('writer')}")
    for response in (
        client.get("/users"),
        client.get(f"/users/{user.id}"),  # the fast read path
        client.get(f"/users/{user.id}", HTTP_ACCEPT="application/json; indent=2"),
        client.post("/users", NEW_USER, format="json"),
        client.delete(f"/users/{user.id}"),
    ):
        assert response.status_code == 401, response.request["PATH_INFO"]
        assert response.json() == {"detail": BEARER_DETAIL}
        assert response["WWW-Authenticate"] == 'Token realm="api"'
    client.credentials(HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
    assert "'Authorization: Token <token>'" in client.get("/users").json()["detail"]
    assert User.objects.filter(id=user.id).exists()


@pytest.mark.django_db(transaction=True)  # the stream's view closes its database connection
def test_a_bearer_token_is_told_to_use_the_token_scheme_on_the_stream(api_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token('reader')}")
    response = client.get("/users/sse")
    assert (response.status_code, response.json()) == (401, {"detail": BEARER_DETAIL})


def test_another_scheme_is_anonymous_in_public_read_mode(user_factory, settings):
    settings.API_READS_REQUIRE_AUTH = False
    user = user_factory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer anything")
    assert client.get(f"/users/{user.id}").status_code == 200
    assert client.get("/users").status_code == 200
    refused = client.post("/users", NEW_USER, format="json")
    assert (refused.status_code, refused.json()) == (401, {"detail": BEARER_DETAIL})


def test_roles_are_groups_with_the_model_permissions():
    assert set(Group.objects.get(name="reader").permissions.values_list("codename", flat=True)) == {
        "view_user"
    }
    assert set(Group.objects.get(name="writer").permissions.values_list("codename", flat=True)) == {
        "view_user",
        "add_user",
        "delete_user",
    }


def test_tokens_are_stored_only_as_digests(api_token):
    token = api_token("writer")
    stored = ApiToken.objects.get(digest=token_digest(token))
    assert token.startswith("vw_") and len(token) > 40
    assert token not in {stored.digest, stored.prefix, stored.label, str(stored)}
    assert stored.prefix == token[:10]


@pytest.mark.django_db(transaction=True)
def test_a_database_dump_holds_no_token(api_token):
    token = api_token("writer")
    db = settings.DATABASES["default"]
    dump = subprocess.run(
        ["pg_dump", "--data-only", "-h", db.get("HOST") or "127.0.0.1",
         "-p", str(db.get("PORT") or 5432), "-U", db.get("USER") or "postgres", db["NAME"]],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    assert token_digest(token) in dump  # the dump is of the right database
    assert token not in dump and token[10:] not in dump


def test_expired_token_is_401(api_token):
    token = api_token("reader")
    ApiToken.objects.filter(digest=token_digest(token)).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    cache.forget_principals([token_digest(token)])
    response = client_with(token).get("/users")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid, expired or revoked token."}


def test_revoked_token_is_refused_at_once_also_when_cached(
    api_token, django_capture_on_commit_callbacks
):
    token = api_token("reader")
    client = client_with(token)
    assert client.get("/users").status_code == 200  # its principal is cached now
    assert cache.cached_principal(token_digest(token)) is not None
    account = ApiToken.objects.get(digest=token_digest(token)).account
    with django_capture_on_commit_callbacks(execute=True):
        assert api_tokens_revoke(name=account.username) == 1
    assert cache.cached_principal(token_digest(token)) is None
    assert client.get("/users").status_code == 401


def test_permission_change_drops_the_cached_principal(
    api_token, django_capture_on_commit_callbacks
):
    token = api_token("writer")
    client = client_with(token)
    assert client.get("/users").status_code == 200
    account = ApiToken.objects.get(digest=token_digest(token)).account
    with django_capture_on_commit_callbacks(execute=True):
        account.groups.set([Group.objects.get(name="reader")])
    assert cache.cached_principal(token_digest(token)) is None
    assert client.post("/users", NEW_USER, format="json").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        Group.objects.get(name="reader").permissions.remove(
            Permission.objects.get(codename="view_user", content_type__app_label="users")
        )
    assert client.get("/users").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        account.is_active = False
        account.save()
    assert client.get("/users").status_code == 401


def test_warm_token_check_reads_no_database(api_token, django_assert_num_queries):
    from users.selectors import principal_for_token

    token = api_token("reader")
    first = principal_for_token(token=token)
    with django_assert_num_queries(0):
        assert principal_for_token(token=token) == first
    assert first.actions == frozenset({"view"})


def test_principal_round_trips_through_its_cached_form():
    principal = Principal(42, frozenset({"view", "add"}), 1_900_000_000.0)
    assert Principal.decode(principal.encode()) == principal
    assert Principal.decode(Principal(1, frozenset()).encode()) == Principal(1, frozenset())


def test_create_api_client_prints_the_token_alone_on_the_last_line(capsys):
    call_command("create_api_client", "robot", "--role", "reader", "--expires-days", "7")
    out = capsys.readouterr()
    token = out.out.strip().splitlines()[-1]
    assert token.startswith("vw_") and " " not in token
    assert "revoke_api_tokens robot" in out.err
    stored = ApiToken.objects.get(digest=token_digest(token))
    assert stored.account.username == "robot"
    assert timedelta(days=6) < stored.expires_at - timezone.now() <= timedelta(days=7)
    assert client_with(token).get("/users").status_code == 200

    # Again, as a writer: the same account, a second token, the new role.
    call_command("create_api_client", "robot", "--role", "writer", "--expires-days", "0")
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second != token
    assert ApiToken.objects.get(digest=token_digest(second)).expires_at is None
    assert client_with(second).post("/users", NEW_USER, format="json").status_code == 201
    assert get_user_model().objects.get(username="robot").has_usable_password() is False


def test_revoke_api_tokens_command(capsys):
    _, token = api_client_create(name="gone", role="reader", expires_days=1)
    call_command("revoke_api_tokens", "gone")
    assert "revoked 1 token" in capsys.readouterr().out
    assert not ApiToken.objects.filter(digest=token_digest(token)).exists()

    with pytest.raises(CommandError, match="no token"):
        call_command("revoke_api_tokens", "gone")


def test_accounts_are_throttled_per_account(api_token, settings, redis_client):
    settings.API_USER_THROTTLE_RATE = "2/day"
    first, second = client_with(api_token("reader")), client_with(api_token("reader"))
    assert [first.get("/users").status_code for _ in range(3)] == [200, 200, 429]
    assert second.get("/users").status_code == 200  # another account's limit is its own
    assert second.get("/users/1").status_code in (404,)  # same counter for every endpoint
    assert second.get("/users").status_code == 429


def test_throttle_keys_are_bounded_whatever_the_client_sends():
    key = cache.throttle_key(scope="anon", ident="x" * 10_000_000, window=1)
    assert len(key) < 120


@pytest.mark.parametrize(
    "kind, fields",
    [
        ("a superuser", {"is_superuser": True, "is_staff": True}),
        ("a staff account", {"is_staff": True}),
        ("an account with a password", {}),
    ],
)
def test_create_api_client_refuses_a_persons_account(kind, fields, capsys):
    """A token acts with its account's rights and the role replaces the account's groups: a
    `reader` token of a staff account used to carry all the account's rights."""
    from django.contrib.auth.models import Group

    from users.services import roles_ensure

    roles_ensure()
    person = get_user_model().objects.create_user("person", password="a password", **fields)
    person.groups.set([Group.objects.get(name="writer")])
    with pytest.raises(CommandError, match=f"^'person' is {kind}, not an API client: .*new name$"):
        call_command("create_api_client", "person", "--role", "reader")
    assert not ApiToken.objects.filter(account=person).exists()
    assert list(person.groups.values_list("name", flat=True)) == ["writer"]
    assert capsys.readouterr().out == ""


def unknown_token() -> str:
    from users.access import new_token

    return new_token()  # well formed, never stored


def test_unknown_tokens_count_against_the_address_limit(settings, redis_client):
    from users.ratelimit import anon_window

    settings.API_ANON_THROTTLE_RATE = "3/day"  # a window that will not roll over mid-test
    key = anon_window("127.0.0.1").key
    redis_client.delete(key)
    try:
        # A new made-up token each time: what a guessing client sends.
        responses = [client_with(unknown_token()).get("/users") for _ in range(5)]
        assert [r.status_code for r in responses] == [401, 401, 401, 429, 429]
        assert int(responses[-1]["Retry-After"]) >= 1
        assert "throttled" in responses[-1].json()["detail"]
    finally:
        redis_client.delete(key)


def test_an_unknown_token_is_looked_up_once_then_refused_from_redis(
    django_assert_num_queries, redis_client
):
    token = unknown_token()
    client = client_with(token)
    with django_assert_num_queries(1):  # the token's row, which is not there
        assert client.get("/users").status_code == 401
    key = cache.invalid_token_key(token_digest(token))
    assert 0 < redis_client.pttl(key) <= settings.API_INVALID_TOKEN_CACHE_SECONDS * 1000
    with django_assert_num_queries(0):
        response = client.get("/users")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid, expired or revoked token."}
    redis_client.delete(key)
