"""GET /users/{id} through the production server (uvicorn running viswals.asgi, the fast read
path ahead of Django) against this run's PostgreSQL and Redis."""

from __future__ import annotations

import itertools

import httpx
import pytest

from tests.support.servers import WebServer
from users import cache
from users.models import User

pytestmark = pytest.mark.django_db(transaction=True)

RATE_LIMIT = 5
_clients = itertools.count(1)


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    # Behind a (pretend) proxy on loopback: X-Forwarded-For tells clients apart, so each test
    # is its own client address and rate limits stay per test.
    with WebServer(
        tmp_path_factory.mktemp("api-web") / "web.log",
        workers=1,
        API_ANON_THROTTLE_RATE=f"{RATE_LIMIT}/day",
        API_USER_THROTTLE_RATE=f"{RATE_LIMIT}/day",
        TRUSTED_PROXIES="127.0.0.1/32",
    ) as server:
        yield server.base


@pytest.fixture
def reader(api_token) -> str:
    return f"Token {api_token('reader')}"


def get(url: str, authorization: str | None = None, **headers: str) -> httpx.Response:
    headers.setdefault("X-Forwarded-For", f"10.0.0.{next(_clients)}")
    if authorization:
        headers["Authorization"] = authorization
    return httpx.get(url, headers=headers, timeout=5)


@pytest.fixture
def user(user_factory):
    user = user_factory(first_name="Zoë")
    cache.forget_users([user.id])
    yield user
    cache.forget_users([user.id])


def test_miss_then_hit(server, user, reader, redis_client):
    first = get(f"{server}/users/{user.id}", reader)
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.json()["first_name"] == "Zoë"
    raw = cache.cached_user_json(user.id)
    assert raw == first.content  # filled on the miss, and the same bytes
    redis_client.set(
        cache.user_key(user.id), cache.encode_entry(0, b'{"id":%d,"from":"redis"}' % user.id)
    )
    assert get(f"{server}/users/{user.id}", reader).json() == {"id": user.id, "from": "redis"}


def test_deleted_user_is_404(server, user, reader):
    assert get(f"{server}/users/{user.id}", reader).status_code == 200
    User.objects.filter(id=user.id).delete()  # a raw delete: the cache still holds the user
    cache.forget_users([user.id])  # ... which is what user_delete does on commit
    response = get(f"{server}/users/{user.id}", reader)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_unknown_and_non_numeric_ids_are_json_404(server, reader):
    for path in ("/users/987654321", "/users/abc", "/users/99999999999999999999"):
        response = get(f"{server}{path}", reader)
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}


def test_browsers_get_the_browsable_api(server, user, reader):
    response = get(f"{server}/users/{user.id}", reader, Accept="text/html")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Zoë" in response.text


def test_anonymous_and_unknown_clients_get_401_and_read_nothing(server, user, api_token):
    for authorization in (None, "Token vw_unknown", "Token " + "x" * 500, "Token"):
        response = get(f"{server}/users/{user.id}", authorization)
        assert response.status_code == 401, authorization
        assert response.headers["www-authenticate"] == 'Token realm="api"'
        assert "Zoë" not in response.text
    nobody = get(f"{server}/users/{user.id}", f"Token {api_token(None)}")
    assert nobody.status_code == 403
    assert nobody.json() == {"detail": "You do not have permission to perform this action."}


def test_a_bearer_token_on_the_fast_path_is_told_to_use_the_token_scheme(server, user, api_token):
    response = get(f"{server}/users/{user.id}", f"Bearer {api_token('reader')}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Token realm="api"'
    assert response.json() == {
        "detail": "Authorization scheme 'Bearer' is not accepted here: "
        "send 'Authorization: Token <token>'."
    }


def test_an_unknown_query_parameter_is_refused_not_ignored(server, user, reader):
    response = get(f"{server}/users/{user.id}?fields=id", reader)
    assert response.status_code == 400
    assert response.json() == {"fields": ["Unknown query parameter. Accepted: format."]}


def test_revoked_token_is_refused_on_the_fast_path(server, user, api_token):
    from users.models import ApiToken
    from users.services import api_tokens_revoke

    token = api_token("reader")
    assert get(f"{server}/users/{user.id}", f"Token {token}").status_code == 200  # now cached
    api_tokens_revoke(name=ApiToken.objects.get(prefix=token[:10]).account.username)
    assert get(f"{server}/users/{user.id}", f"Token {token}").status_code == 401


def test_accounts_are_rate_limited_on_the_fast_path(server, user, reader, api_token):
    statuses = [get(f"{server}/users/{user.id}", reader).status_code for _ in range(RATE_LIMIT + 1)]
    assert statuses == [200] * RATE_LIMIT + [429]
    limited = get(f"{server}/users", reader)  # one limit for the API
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    # Another account, from the same address, has its own limit.
    assert get(f"{server}/users/{user.id}", f"Token {api_token('reader')}").status_code == 200


def test_anonymous_reads_are_rate_limited_in_public_read_mode(user, web_server):
    server = web_server(
        workers=1, API_READS_REQUIRE_AUTH="false", API_ANON_THROTTLE_RATE=f"{RATE_LIMIT}/day"
    )
    # No trusted proxy here: X-Forwarded-For is the client's own word and changes nothing.
    statuses = [
        get(f"{server.base}/users/{user.id}", **{"X-Forwarded-For": f"10.2.0.{n}"}).status_code
        for n in range(RATE_LIMIT + 1)
    ]
    assert statuses == [200] * RATE_LIMIT + [429]
    limited = get(f"{server.base}/users")  # one limit for the API
    assert limited.status_code == 429


def test_reads_are_served_from_postgres_when_redis_is_down(user, api_token, web_server):
    # A server whose Redis URL points where nothing listens (the shared Redis keeps running).
    server = web_server(
        workers=1, REDIS_URL="redis://127.0.0.1:1/0", API_USER_THROTTLE_RATE=f"{RATE_LIMIT}/day"
    )
    base = server.base
    reader = f"Token {api_token('reader')}"
    for _ in range(RATE_LIMIT + 1):  # tokens checked in PostgreSQL; the limit fails open
        response = get(f"{base}/users/{user.id}", reader)
        assert response.status_code == 200
        assert response.json()["first_name"] == "Zoë"
    assert get(f"{base}/users/987654321", reader).status_code == 404
    assert get(f"{base}/users?name=zoë", reader).status_code == 200
    assert get(f"{base}/users/{user.id}").status_code == 401
    server.stop()
    assert "Redis unavailable" in server.log()


def test_unknown_tokens_count_against_the_address_limit_on_the_fast_path(
    server, user, redis_client
):
    from users.access import new_token, token_digest

    address = f"10.3.0.{next(_clients)}"
    tokens = [new_token() for _ in range(RATE_LIMIT + 2)]
    statuses = [
        get(f"{server}/users/{user.id}", f"Token {token}", **{"X-Forwarded-For": address})
        for token in tokens
    ]
    assert [r.status_code for r in statuses] == [401] * RATE_LIMIT + [429, 429]
    assert int(statuses[-1].headers["retry-after"]) >= 1
    # Each one PostgreSQL refused is refused from Redis for a few seconds.
    assert redis_client.exists(cache.invalid_token_key(token_digest(tokens[0])))
    assert not redis_client.exists(cache.invalid_token_key(token_digest(tokens[-1])))


def test_the_server_runs_with_debug_off_as_in_production(server):
    """Test web servers run as production does: no debug page for an unknown URL."""
    response = httpx.get(f"{server}/no-such-page", timeout=5)
    assert response.status_code == 404
    assert "URLconf" not in response.text and "DEBUG = True" not in response.text
