"""Redis with Sentinel, end to end: the Procfile's web server with REDIS_SENTINELS set, on a
primary, a replica and three Sentinels of the tests' own (tests/cluster/redis_sentinel.py).
The primary is killed; the cache, the fast read path, the token and rate-limit scripts, the
stream's history and its reader, and /readyz follow the Sentinels to the promoted replica."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.cluster.sse import FollowingStream
from tests.support.servers import WebServer

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def sentinel_server(redis_sentinels, django_db_setup, django_db_blocker, tmp_path_factory):
    log = tmp_path_factory.mktemp("sentinel-web") / "web.log"
    with WebServer(log, workers=2, **redis_sentinels.env) as server:
        yield server


def _client(base: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=base,
        timeout=5,
        headers={"Authorization": f"Token {token}", "Accept": "application/json"},
    )


def _until(action, timeout: float = 30):
    """`action()` until it returns a true value (exceptions count as false); that value and the
    seconds it took."""
    started = time.monotonic()
    while True:
        try:
            value = action()
        except httpx.HTTPError:
            value = None
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.1)


def _create(writer: httpx.Client, name: str) -> int | None:
    response = writer.post(
        "/users", json={"first_name": name, "last_name": "Sentinel", "email_address": "s@x.io"}
    )
    return response.json()["id"] if response.status_code == 201 else None


def _readyz(base: str) -> dict:
    return httpx.get(f"{base}/readyz", timeout=5).json()


def test_readiness_fails_when_the_sentinels_name_a_replica(redis_sentinels, settings, monkeypatch):
    import redis
    from redis.sentinel import Sentinel

    from viswals.health import check_redis

    settings.REDIS_SENTINEL = {
        "sentinels": [("127.0.0.1", port) for port in redis_sentinels.sentinel_ports],
        "master": redis_sentinels.env["REDIS_SENTINEL_MASTER"],
        "sentinel_kwargs": {"socket_timeout": 0.5},
    }
    check_redis()  # the primary they name answers as a primary

    primary = redis_sentinels.primary_port()
    replica = next(port for port in redis_sentinels.server_ports if port != primary)
    # A Sentinel that has not seen a failover yet names a server that is a replica by now.
    monkeypatch.setattr(Sentinel, "discover_master", lambda self, name: ("127.0.0.1", replica))
    with pytest.raises(redis.ConnectionError, match="answers as"):
        check_redis()


def test_every_redis_use_follows_a_failover(sentinel_server, redis_sentinels, api_token, capsys):
    from users.cache import user_key

    base = sentinel_server.base
    reader_token, writer_token = api_token("reader"), api_token("writer")
    assert _readyz(base)["status"] == "ok"
    stream = FollowingStream(f"{base}/users/sse", {"Authorization": f"Token {reader_token}"})
    with _client(base, reader_token) as reader, _client(base, writer_token) as writer:
        try:
            stream.wait_for(lambda event: event.type == "stream-open")
            before = _create(writer, "Before")
            assert before is not None
            assert reader.get(f"/users/{before}").status_code == 200
            seen = stream.wait_for(lambda e: e.type == "user.created" and e.json()["id"] == before)
            old_primary = redis_sentinels.primary_port()
            assert redis_sentinels.client(old_primary).exists(user_key(before))

            killed_at = time.monotonic()
            redis_sentinels.kill_primary()
            new_primary = redis_sentinels.wait_for_failover(old_primary)
            failover = time.monotonic() - killed_at

            # /readyz asks the Sentinels for the primary, and checks it answers as one.
            _, ready_after = _until(lambda: _readyz(base)["status"] == "ok")
            # A write goes to the new primary: its cache entry and its event are there.
            after, _ = _until(lambda: _create(writer, "After"))
            assert redis_sentinels.client(new_primary).exists(user_key(after))
            # The fast read path (token, rate limit and user in one script) on the new primary.
            assert reader.get(f"/users/{after}").status_code == 200
            assert reader.get(f"/users/{before}").status_code == 200
            # The stream's reader task follows, and the promoted replica began a new epoch (it
            # may lack the last events): the client is told to reset, then goes on live there.
            reset = stream.wait_for(lambda e: e.type == "stream-reset")
            epoch_before = seen.id.rpartition("@")[2].split(":")[0]
            epoch_after = reset.id.rpartition("@")[2].split(":")[0]
            assert epoch_after != epoch_before
            live = _create(writer, "Live")
            event = stream.wait_for(lambda e: e.type == "user.created" and e.json()["id"] == live)
            assert event.id.rpartition("@")[2].startswith(f"{epoch_after}:")
            with capsys.disabled():
                print(
                    f"\nSentinel failover: promoted after {failover:.1f}s,"
                    f" /readyz ok {ready_after:.1f}s later"
                )
        finally:
            stream.close()
