"""The database router and the replica choice, on one machine with no replica (the default):
everything on the primary, nothing new in the request path. The replicas themselves are
tested against a primary and a streaming replica in tests/cluster/test_read_replicas.py."""

from __future__ import annotations

import pytest
from django.core.exceptions import MiddlewareNotUsed
from django.db import OperationalError, router

from tests.support.environment import settings_value
from users import cache
from users.consistency import read_alias, read_your_writes_middleware
from users.models import User
from viswals import db_router
from viswals.db_router import DOWN, OK, ReplicaState


def test_router_reads_writes_and_migrates_on_the_primary_only():
    assert router.db_for_read(User) == "default"
    assert router.db_for_write(User) == "default"
    assert router.allow_migrate("default", "users")
    assert not router.allow_migrate("replica_0", "users")


def test_without_replicas_every_read_uses_the_primary_and_nothing_is_added(settings):
    assert list(settings.DATABASES) == ["default"]
    assert db_router.replica_alias() == "default"
    assert read_alias(account_id=1) == "default"
    assert db_router.replica_states() == {}
    with pytest.raises(MiddlewareNotUsed):
        read_your_writes_middleware(lambda request: None)


def test_replica_urls_become_read_only_aliases_that_tests_mirror():
    result = settings_value(
        "[(a, d['HOST'], d['PORT'], d['NAME'], d['TEST']['MIRROR']) "
        "for a, d in settings.DATABASES.items()], settings.DATABASE_REPLICA_MAX_LAG_SECONDS",
        DJANGO_DEBUG="true",
        DATABASE_REPLICA_URLS="postgres://u@10.0.0.2:5433/one,postgres://u@10.0.0.3/two",
        DATABASE_REPLICA_MAX_LAG_SECONDS="2.5",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "[('default', '127.0.0.1', 5432, 'viswals', None), "
        "('replica_0', '10.0.0.2', 5433, 'one', 'default'), "
        "('replica_1', '10.0.0.3', '', 'two', 'default')] 2.5"
    )


def test_a_replica_failing_a_read_falls_back_to_the_primary_and_is_taken_out(monkeypatch):
    replicas = db_router._Replicas()
    replicas.states = {"replica_0": ReplicaState(OK, replay_lsn=10, lag_seconds=0.0)}
    monkeypatch.setattr(db_router, "_replicas", replicas)
    tried = []

    def read(alias: str) -> str:
        tried.append(alias)
        if alias != "default":
            raise OperationalError("connection refused")
        return "rows"

    assert db_router.read_with_fallback(read, "replica_0") == "rows"
    assert tried == ["replica_0", "default"]
    assert replicas.states["replica_0"].status == DOWN


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_a_replica_serves_an_account_only_once_it_has_replayed_its_write(monkeypatch, settings):
    settings.DATABASES = {**settings.DATABASES, "replica_0": settings.DATABASES["default"]}
    replicas = db_router._Replicas()
    replicas.states = {"replica_0": ReplicaState(OK, replay_lsn=100, lag_seconds=0.0)}
    replicas.checked_at = float("inf")  # no check starts in this test
    monkeypatch.setattr(db_router, "_replicas", replicas)

    assert db_router.replica_alias() == "replica_0"
    assert db_router.replica_alias(min_lsn=100) == "replica_0"
    assert db_router.replica_alias(min_lsn=101) == "default"
    replicas.states = {"replica_0": ReplicaState("lagging", replay_lsn=500, lag_seconds=9.0)}
    assert db_router.replica_alias() == "default"


def test_an_accounts_write_position_only_moves_forward(redis_client):
    cache.note_written_lsn(7, 2_000, ttl=5)
    cache.note_written_lsn(7, 1_000, ttl=5)  # an earlier write, noted late by another host
    assert cache.written_lsn(7) == 2_000
    assert 0 < redis_client.pttl(cache.written_lsn_key(7)) <= 5000
    assert cache.written_lsn(8) is None
    redis_client.delete(cache.written_lsn_key(7))


def test_a_token_read_is_routed_by_its_principal_without_loading_the_account_row():
    # The account behind a token is a lazy object: reading it would cost a query on the primary
    # for every routed read; the principal already names the account.
    from django.http import HttpRequest
    from django.utils.functional import SimpleLazyObject

    from users.access import Principal
    from users.consistency import request_account_id

    def load_account():
        raise AssertionError("the account row was loaded")

    request = HttpRequest()
    request.user = SimpleLazyObject(load_account)
    request.auth = Principal(account_id=42, actions=frozenset({"view_user"}))
    assert request_account_id(request) == 42


def test_a_session_read_is_routed_by_its_user():
    from django.contrib.auth.models import AnonymousUser
    from django.http import HttpRequest

    from users.consistency import request_account_id

    request = HttpRequest()
    request.user = AnonymousUser()
    assert request_account_id(request) is None
    request.user = type("Account", (), {"is_authenticated": True, "pk": 7})()
    assert request_account_id(request) == 7


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_a_routed_list_read_asks_redis_no_more_often_than_an_unrouted_one(
    api_token, monkeypatch, settings, redis_client
):
    # The account's write position is read in the rate limit's round trip, not in one of its own.
    import redis.connection
    from rest_framework.test import APIClient

    from users import consistency, selectors

    settings.API_USER_THROTTLE_RATE = "1000000/minute"
    token = api_token("writer")
    account_id = selectors.principal_for_authorization(f"Token {token}").account_id
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    round_trips = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(connection, command, check_health=True):
        round_trips.append(command)
        return send(connection, command, check_health)

    def list_round_trips() -> int:
        round_trips.clear()
        assert client.get("/users?page_size=5").status_code == 200
        return len(round_trips)

    client.get("/users?page_size=5")  # the token's principal is cached from here on
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    unrouted = list_round_trips()

    settings.DATABASES = {**settings.DATABASES, "replica_0": settings.DATABASES["default"]}
    floor = consistency._Floor()
    floor.checked_at = float("inf")  # the once-a-second floor check is not this test's
    monkeypatch.setattr(consistency, "_floor", floor)
    asked = []  # the position each routed read required of a replica (it reads the primary)
    monkeypatch.setattr(
        consistency, "replica_alias", lambda *, min_lsn: asked.append(min_lsn) or "default"
    )
    try:
        assert list_round_trips() == unrouted
        cache.note_written_lsn(account_id, 123_456, ttl=5)
        assert list_round_trips() == unrouted
    finally:
        redis_client.delete(cache.written_lsn_key(account_id))
    assert asked == [None, 123_456]  # read-your-writes holds with the folded lookup
