"""GET /users/{id} through the production server (uvicorn running viswals.asgi, the fast read
path ahead of Django) against this run's PostgreSQL and Redis."""

from __future__ import annotations

import itertools

import httpx
import pytest

from tests.processes import WebServer
from users import cache
from users.models import User

pytestmark = pytest.mark.django_db(transaction=True)

RATE_LIMIT = 5
_clients = itertools.count(1)


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    server = WebServer(
        tmp_path_factory.mktemp("api-web") / "web.log",
        workers=1,
        API_ANON_THROTTLE_RATE=f"{RATE_LIMIT}/day",
    )
    yield server.base
    server.stop()


def get(url: str, **headers: str) -> httpx.Response:
    # Each test is its own client address (X-Forwarded-For), so rate limits stay per test.
    headers.setdefault("X-Forwarded-For", f"10.0.0.{next(_clients)}")
    return httpx.get(url, headers=headers, timeout=5)


@pytest.fixture
def user(user_factory):
    user = user_factory(first_name="Zoë")
    cache.forget_users([user.id])
    yield user
    cache.forget_users([user.id])


def test_miss_then_hit(server, user, redis_client):
    first = get(f"{server}/users/{user.id}")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.json()["first_name"] == "Zoë"
    raw = cache.cached_user_json(user.id)
    assert raw == first.content  # filled on the miss, and the same bytes
    redis_client.set(
        cache.user_key(user.id), cache.encode_entry(0, b'{"id":%d,"from":"redis"}' % user.id)
    )
    assert get(f"{server}/users/{user.id}").json() == {"id": user.id, "from": "redis"}


def test_deleted_user_is_404(server, user, token_client):
    assert get(f"{server}/users/{user.id}").status_code == 200
    User.objects.filter(id=user.id).delete()  # a raw delete: the cache still holds the user
    cache.forget_users([user.id])  # ... which is what user_delete does on commit
    response = get(f"{server}/users/{user.id}")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_unknown_and_non_numeric_ids_are_json_404(server):
    for path in ("/users/987654321", "/users/abc", "/users/99999999999999999999"):
        response = get(f"{server}{path}")
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}


def test_browsers_get_the_browsable_api(server, user):
    response = get(f"{server}/users/{user.id}", Accept="text/html")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Zoë" in response.text


def test_anonymous_reads_are_rate_limited(server, user):
    client = f"10.1.{next(_clients)}.1"
    statuses = [
        get(f"{server}/users/{user.id}", **{"X-Forwarded-For": client}).status_code
        for _ in range(RATE_LIMIT + 1)
    ]
    assert statuses == [200] * RATE_LIMIT + [429]
    limited = get(f"{server}/users", **{"X-Forwarded-For": client})  # one limit for the API
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


def test_reads_are_served_from_postgres_when_redis_is_down(user, tmp_path):
    # A server whose Redis URL points where nothing listens (the shared Redis keeps running).
    server = WebServer(
        tmp_path / "web.log",
        workers=1,
        REDIS_URL="redis://127.0.0.1:1/0",
        API_ANON_THROTTLE_RATE=f"{RATE_LIMIT}/day",
    )
    base = server.base
    try:
        for _ in range(RATE_LIMIT + 1):  # the rate limit fails open, too
            response = get(f"{base}/users/{user.id}")
            assert response.status_code == 200
            assert response.json()["first_name"] == "Zoë"
        assert get(f"{base}/users/987654321").status_code == 404
        assert get(f"{base}/users?name=zo").status_code == 200
    finally:
        server.stop()
    assert "Redis unavailable" in (tmp_path / "web.log").read_text()
