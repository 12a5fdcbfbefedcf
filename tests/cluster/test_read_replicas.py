"""Read replicas, end to end: the Procfile's web server on a primary and a streaming replica of
the tests' own (tests/cluster/postgres.py). Which server answered a query is read from the
servers' own statement logs, or made visible by pausing the replica's replay so it
lacks a write the primary has."""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager

import httpx
import pytest

from tests.support.servers import WebServer
from tests.support.waits import wait_until

pytestmark = pytest.mark.cluster

METRICS_TOKEN = "cluster-metrics-token"


@contextmanager
def replica_server(postgres_pair, tmp_path_factory, **env: str):
    """A one-worker web server reading from the pair, once its replica is in use."""
    log = tmp_path_factory.mktemp("web") / "web.log"
    with WebServer(
        log,
        workers=1,
        DATABASE_URL=postgres_pair.primary_url,
        DATABASE_REPLICA_URLS=postgres_pair.replica_url,
        METRICS_TOKEN=METRICS_TOKEN,
        **env,
    ) as server:
        wait_until(lambda: readyz(server.base) == {"status": "ok", "replicas": {"replica_0": "ok"}})
        yield server


@pytest.fixture(scope="module")
def server(postgres_pair, tmp_path_factory):
    # A lag limit no test reaches: a replica with paused replay stays in use.
    with replica_server(
        postgres_pair, tmp_path_factory, DATABASE_REPLICA_MAX_LAG_SECONDS="3600"
    ) as server:
        yield server


def readyz(base: str) -> dict:
    response = httpx.get(f"{base}/readyz", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def client(base: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=base,
        timeout=10,
        headers={"Authorization": f"Token {token}", "Accept": "application/json"},
    )


def listed(base: str, token: str, name: str) -> list[int]:
    with client(base, token) as http:
        response = http.get("/users", params={"name": name})
    assert response.status_code == 200, response.text
    return [user["id"] for user in response.json()["results"]]


def create(base: str, token: str, first_name: str) -> int:
    with client(base, token) as http:
        response = http.post(
            "/users",
            json={"first_name": first_name, "last_name": "Replica", "email_address": "r@x.io"},
        )
    assert response.status_code == 201, response.text
    return response.json()["id"]


@contextmanager
def replay_paused(postgres_pair):
    """The replica keeps receiving WAL but applies none of it until the block ends."""
    with postgres_pair.replica() as replica:
        replica.execute("SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            replica.execute("SELECT pg_wal_replay_resume()")


def marker() -> str:
    return "Zq" + uuid.uuid4().hex[:10]


def test_list_reads_go_to_the_replica(server, postgres_pair, cluster_tokens):
    name = marker()
    assert listed(server.base, cluster_tokens["reader"], name) == []

    assert postgres_pair.logged_statements("replica", name), "the list did not run on the replica"
    assert not postgres_pair.logged_statements("primary", name)


def test_a_writer_reads_its_own_write_while_the_replica_lags(server, postgres_pair, cluster_tokens):
    name = marker()
    with replay_paused(postgres_pair):
        user_id = create(server.base, cluster_tokens["writer"], name)

        # The writer's list comes from the primary: the replica has not replayed its write.
        assert listed(server.base, cluster_tokens["writer"], name) == [user_id]
        # Another account's list may be a moment stale, and is: it came from the replica.
        assert listed(server.base, cluster_tokens["reader"], name) == []

    wait_until(lambda: listed(server.base, cluster_tokens["reader"], name) == [user_id])


def test_cache_fills_read_the_primary_never_a_stale_replica(
    server, postgres_pair, cluster_tokens, redis_client
):
    from django.conf import settings

    def user_key(user_id: int) -> str:  # users.cache.user_key, for the pair's database
        return f"{settings.USERS_CACHE_PREFIX}:{postgres_pair.cache_namespace()}:{user_id}"

    name = marker()
    with replay_paused(postgres_pair), client(server.base, cluster_tokens["reader"]) as reader:
        user_id = create(server.base, cluster_tokens["writer"], name)
        redis_client.delete(user_key(user_id))

        # A miss is filled from the primary (the replica does not have the user yet).
        response = reader.get(f"/users/{user_id}")
        assert response.status_code == 200, response.text
        assert response.json()["first_name"] == name
        assert redis_client.get(user_key(user_id)) is not None

        with client(server.base, cluster_tokens["writer"]) as writer:
            assert writer.delete(f"/users/{user_id}").status_code == 204
        # The replica still has the user; a fill from it would put the user back into Redis.
        response = reader.get(f"/users/{user_id}")
        assert response.status_code == 404, response.text
        assert redis_client.get(user_key(user_id)) is None


def test_a_writer_reads_its_own_write_after_redis_lost_its_position(
    server, postgres_pair, cluster_tokens, redis_client
):
    """A Redis failover that lost the account's noted position: the new primary's replication
    id differs from the one stored with the floor, so every account waits for the replicas to
    replay past the PostgreSQL primary's position when the change was seen."""
    from users.cache import written_lsn_floor_key, written_lsn_key

    name = marker()
    with replay_paused(postgres_pair):
        user_id = create(server.base, cluster_tokens["writer"], name)
        positions = list(redis_client.scan_iter(written_lsn_key(0).removesuffix("0") + "*"))
        # What a failover that lost the write's position would look like with the same Redis
        # primary: without the position, the writer's read is a moment stale...
        redis_client.delete(*positions)
        time.sleep(1.2)  # the server's last look at the floor is older than a second
        assert listed(server.base, cluster_tokens["writer"], name) == []
        # ...and with the primary's replication id changed, it is not.
        redis_client.hset(written_lsn_floor_key(), "replid", "a-primary-before-the-failover")
        time.sleep(1.2)
        assert listed(server.base, cluster_tokens["writer"], name) == [user_id]
        assert "the Redis primary changed" in server.log()
    wait_until(lambda: listed(server.base, cluster_tokens["reader"], name) == [user_id])


def test_a_replica_past_the_lag_limit_is_skipped_and_reported(
    postgres_pair, cluster_tokens, tmp_path_factory
):
    name = marker()
    with (
        replica_server(
            postgres_pair, tmp_path_factory, DATABASE_REPLICA_MAX_LAG_SECONDS="1"
        ) as server,
        replay_paused(postgres_pair),
    ):
        user_id = create(server.base, cluster_tokens["writer"], name)

        # Once the replica is more than a second behind, everyone reads the primary.
        wait_until(lambda: listed(server.base, cluster_tokens["reader"], name) == [user_id])
        assert readyz(server.base) == {"status": "degraded", "replicas": {"replica_0": "lagging"}}
        metrics = httpx.get(
            f"{server.base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        ).text
        assert 'db_replica_up{replica="replica_0",state="lagging"} 0.0' in metrics
        assert "lagging" in server.log()


def test_a_stopped_replica_costs_no_read_and_is_reported_once(
    server, postgres_pair, cluster_tokens
):
    name = marker()
    postgres_pair.stop_replica()
    try:
        # Reads go on, from the primary, including the first one after the replica died.
        for _ in range(5):
            assert listed(server.base, cluster_tokens["reader"], name) == []
        assert readyz(server.base) == {"status": "degraded", "replicas": {"replica_0": "down"}}
        wait_until(lambda: readyz(server.base)["replicas"] == {"replica_0": "down"})
        for _ in range(5):
            assert listed(server.base, cluster_tokens["reader"], name) == []
        # One line for the change of state, not one per read or per check.
        assert server.log().count("replica replica_0: ok -> down") == 1, server.log()[-3000:]
    finally:
        postgres_pair.start_replica()
    wait_until(
        lambda: readyz(server.base) == {"status": "ok", "replicas": {"replica_0": "ok"}},
        timeout=30,
    )
