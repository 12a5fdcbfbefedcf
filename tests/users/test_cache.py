"""The Redis cache behind GET /users/{id}: cache-aside, coherence with writes of every kind,
and reads that survive Redis being unreachable."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings

from tests.support.data import cached
from tests.support.environment import database_url
from users import cache, selectors
from users.columns import UserRow
from users.models import User
from users.payloads import to_json, user_payload
from users.services import SourcedUser, user_delete, user_update, users_upsert

pytestmark = pytest.mark.django_db

DEAD_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens here: connection refused
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
}


def test_miss_reads_postgres_and_fills_the_cache(
    reader_client, user_factory, clean_user_cache, redis_client
):
    user = user_factory()
    clean_user_cache(user.id)
    assert cached(user.id) is None
    body = reader_client.get(f"/users/{user.id}").json()
    assert cached(user.id) == body


def test_hit_is_served_from_redis(reader_client, user_factory, clean_user_cache, redis_client):
    user = user_factory()
    clean_user_cache(user.id)
    reader_client.get(f"/users/{user.id}")
    # Prove the next read does not touch PostgreSQL: change the cached copy only.
    redis_client.set(cache.user_key(user.id), cache.encode_entry(0, '{"id":1,"marker":true}'))
    response = reader_client.get(f"/users/{user.id}")
    assert response.content == b'{"id":1,"marker":true}'  # bytes as cached, not re-encoded


def test_get_delete_get_is_404(
    reader_client,
    writer_client,
    user_factory,
    clean_user_cache,
    django_capture_on_commit_callbacks,
    redis_client,
):
    user = user_factory()
    clean_user_cache(user.id)
    assert reader_client.get(f"/users/{user.id}").status_code == 200
    assert cached(user.id) is not None
    with django_capture_on_commit_callbacks(execute=True):
        assert writer_client.delete(f"/users/{user.id}").status_code == 204
    assert cached(user.id) is None
    assert reader_client.get(f"/users/{user.id}").status_code == 404


def test_created_user_is_cached_on_commit(
    writer_client, reader_client, redis_client, django_capture_on_commit_callbacks, clean_user_cache
):
    with django_capture_on_commit_callbacks(execute=True):
        body = writer_client.post(
            "/users",
            {"first_name": "A", "last_name": "B", "email_address": "a@b.example"},
            format="json",
        ).json()
    assert cached(body["id"]) == body
    assert reader_client.get(f"/users/{body['id']}").json() == body
    cache.forget_users([body["id"]])


def test_update_through_services_shows_on_next_get(
    reader_client, user_factory, clean_user_cache, django_capture_on_commit_callbacks
):
    user = user_factory(first_name="Old")
    clean_user_cache(user.id)
    assert reader_client.get(f"/users/{user.id}").json()["first_name"] == "Old"
    with django_capture_on_commit_callbacks(execute=True):
        user_update(user=user, fields={"first_name": "New"})
    assert reader_client.get(f"/users/{user.id}").json()["first_name"] == "New"


def test_reingest_that_changes_a_cached_user_shows_on_next_get(
    reader_client, user_factory, clean_user_cache, django_capture_on_commit_callbacks
):
    user = user_factory(first_name="Before")
    clean_user_cache(user.id)
    assert reader_client.get(f"/users/{user.id}").json()["first_name"] == "Before"
    row = UserRow(
        id=user.id,
        first_name="After",
        last_name=user.last_name,
        email_address=user.email_address,
        created_at=user.created_at,
        deleted_at=datetime(2024, 2, 2, tzinfo=UTC),
        merged_at=None,
        parent_user_id=None,
    )
    with django_capture_on_commit_callbacks(execute=True):
        users_upsert(run_id=10**6, batch=0, rows=[SourcedUser(line=2, user=row)])
    body = reader_client.get(f"/users/{user.id}").json()
    assert body["first_name"] == "After"
    assert body["deleted_at"] == "2024-02-02T00:00:00Z"


def test_reads_survive_redis_down(reader_client, user_factory, caplog):
    user = user_factory()
    with override_settings(CACHES=DEAD_REDIS), caplog.at_level(logging.WARNING):
        from django_redis import get_redis_connection

        assert get_redis_connection("default").connection_pool.connection_kwargs["port"] == 1
        detail = reader_client.get(f"/users/{user.id}")
        listing = reader_client.get("/users")
    assert detail.status_code == 200
    assert detail.json()["id"] == user.id
    assert listing.status_code == 200
    assert "Redis unavailable" in caplog.text


def test_fast_read_falls_back_when_redis_is_down(user_factory):
    with override_settings(CACHES=DEAD_REDIS):
        read = asyncio.run(
            cache.afast_read(1, digest="d", anon_window=None, account_window=("p:", ":1", 60))
        )
    assert read == cache.FastRead(None, None, None, False)


def test_fast_read_returns_cached_bytes_principal_and_counts(
    redis_client, clean_user_cache, settings
):
    clean_user_cache(123456789)
    redis_client.set(cache.user_key(123456789), cache.encode_entry(0, b'{"id":123456789}'))
    prefix = f"{settings.USERS_CACHE_PREFIX}:throttle:test:"
    anon_key = f"{prefix}anon"
    redis_client.set(cache.principal_key("feed"), "77|view|")
    try:
        anon = [
            asyncio.run(
                cache.afast_read(
                    123456789, digest=None, anon_window=(anon_key, 60), account_window=None
                )
            )  # fmt: skip
            for _ in range(2)
        ]
        token = asyncio.run(
            cache.afast_read(
                123456789, digest="feed", anon_window=None, account_window=(prefix, ":w", 60)
            )  # fmt: skip
        )
        unknown = asyncio.run(
            cache.afast_read(
                123456789, digest="f00d", anon_window=None, account_window=(prefix, ":w", 60)
            )  # fmt: skip
        )
        assert int(redis_client.get(f"{prefix}77:w")) == 1  # counted per account id
    finally:
        redis_client.delete(anon_key, f"{prefix}77:w", cache.principal_key("feed"))
    assert [r.count for r in anon] == [1, 2]
    assert anon[0].user_json == b'{"id":123456789}' and anon[0].principal is None
    assert token == cache.FastRead(b'{"id":123456789}', b"77|view|", 1, True)
    assert unknown == cache.FastRead(b'{"id":123456789}', None, None, True)  # not counted yet


# --- Writes while Redis is unreachable ---------------------------------------------------------


def test_writes_during_a_redis_outage_are_repaired_when_it_returns(
    reader_client, user_factory, clean_user_cache, django_capture_on_commit_callbacks
):
    from django.core.management import call_command

    from users.models import StaleCacheEntry
    from users.services import cache_repair_stale, user_delete

    edited, deleted, ingested = user_factory(), user_factory(), user_factory(first_name="Old")
    clean_user_cache(edited.id, deleted.id, ingested.id)
    for user in (edited, deleted, ingested):  # cached as they are now
        assert reader_client.get(f"/users/{user.id}").status_code == 200
    row = UserRow(
        ingested.id, "New", ingested.last_name, ingested.email_address, ingested.created_at,
        None, None, None,
    )  # fmt: skip

    with override_settings(CACHES=DEAD_REDIS), django_capture_on_commit_callbacks(execute=True):
        user_update(user=edited, fields={"first_name": "Edited"})
        user_delete(user_id=deleted.id)
        users_upsert(run_id=10**6, batch=0, rows=[SourcedUser(line=2, user=row)])
        assert cache_repair_stale()[0] == 0  # still down: the notes stay
    noted = set(StaleCacheEntry.objects.values_list("user_id", flat=True))
    assert noted == {edited.id, deleted.id, ingested.id}
    # Redis kept the old entries: without the repair a read would be stale.
    assert cached(edited.id)["first_name"] != "Edited"

    call_command("repair_cache")
    assert not StaleCacheEntry.objects.exists()
    assert reader_client.get(f"/users/{edited.id}").json()["first_name"] == "Edited"
    assert reader_client.get(f"/users/{deleted.id}").status_code == 404
    assert reader_client.get(f"/users/{ingested.id}").json()["first_name"] == "New"


def test_repair_cache_fails_clearly_while_redis_is_down():
    from django.core.management import CommandError, call_command

    from users.models import StaleCacheEntry

    StaleCacheEntry.objects.create(user_id=123)
    with override_settings(CACHES=DEAD_REDIS), pytest.raises(CommandError, match="1 left"):
        call_command("repair_cache")
    assert StaleCacheEntry.objects.filter(user_id=123).exists()


def test_the_cache_script_never_replaces_a_newer_version(redis_client, clean_user_cache):
    clean_user_cache(424242)
    assert cache.cache_users_if_newer([(424242, 20, '{"id":424242,"v":"newer"}')])
    assert cache.cache_users_if_newer([(424242, 10, '{"id":424242,"v":"older"}')])
    assert cached(424242) == {"id": 424242, "v": "newer"}
    assert redis_client.get(cache.user_key(424242)).startswith(b"20|")
    # The same with the fresh-import fast path (SET NX first), and an equal version wins.
    assert cache.cache_users_if_newer([(424242, 5, '{"id":424242,"v":"old"}')], new=True)
    assert cached(424242)["v"] == "newer"
    assert cache.cache_users_if_newer([(424242, 20, '{"id":424242,"v":"same"}')], new=True)
    assert cached(424242)["v"] == "same"


@pytest.mark.parametrize("ttl", [3600, 0])
def test_a_batch_of_new_users_sets_the_absent_ones_and_checks_the_rest(
    redis_client, clean_user_cache, ttl
):
    """new=True: the absent keys are set in one pipelined write (with the TTL), the keys
    already there go through the version check, and the connection stays usable."""
    clean_user_cache(5001, 5002, 5003, 5004)
    assert cache.cache_users_if_newer([(5002, 50, '{"v":"newer"}'), (5003, 1, '{"v":"older"}')])
    with override_settings(USERS_CACHE_TTL=ttl):
        entries = [(5001, 10, b'{"v":"a"}'), (5002, 10, b'{"v":"b"}'), (5003, 10, '{"v":"c"}'),
                   (5004, 10, b'{"v":"\xc3\xa9"}')]  # fmt: skip
        assert cache.cache_users_if_newer(entries, new=True)
    assert [cached(n)["v"] for n in (5001, 5002, 5003, 5004)] == ["a", "newer", "c", "é"]
    ttls = [redis_client.pttl(cache.user_key(n)) for n in (5001, 5003)]
    assert all(0 < left <= 3600_000 for left in ttls) if ttl else ttls == [-1, -1]
    assert redis_client.ping()


def test_a_batch_of_new_users_is_not_cached_while_redis_is_down(caplog):
    with override_settings(CACHES=DEAD_REDIS):
        assert not cache.cache_users_if_newer([(5005, 1, b"{}")], new=True)
    assert "could not store 1 users" in caplog.text


RACE_TRIALS = 30
RACE_READERS = 6


def _load_until_gone(user_id: int, start: threading.Barrier, loads: list) -> None:
    """A reader missing Redis again and again (the miss half of a read) until the user is gone."""
    try:
        start.wait()
        while selectors.user_load_payload(user_id=user_id) is not None:
            loads.append(1)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_a_fill_racing_a_delete_never_brings_the_user_back(user_factory, redis_client):
    """Readers that miss Redis and load the user from PostgreSQL while a DELETE commits: once
    the delete has returned and every reader has finished, the user's key is gone, in every
    trial (before fills were leased, most trials left the deleted user cached). Until the
    delete, the key is dropped again and again, as an evicting Redis would, so that fills are
    under way when it commits."""
    ghosts, leased_at_delete = [], 0
    for trial in range(RACE_TRIALS):
        user = user_factory(id=7_000_000 + trial)
        key = cache.user_key(user.id)
        start, loads = threading.Barrier(RACE_READERS + 1), []
        readers = [
            threading.Thread(target=_load_until_gone, args=(user.id, start, loads))
            for _ in range(RACE_READERS)
        ]
        for reader in readers:
            reader.start()
        start.wait()
        deadline = time.monotonic() + 10
        while len(loads) < 4 * RACE_READERS:  # drop the key until readers have filled it often
            assert cache.forget_users([user.id]) and time.monotonic() < deadline
        leased_at_delete += (redis_client.get(key) or b"").startswith(b"lease:")
        assert user_delete(user_id=user.id)
        for reader in readers:
            reader.join(10)
        assert not any(reader.is_alive() for reader in readers)
        if redis_client.exists(key):
            ghosts.append(trial)
            cache.forget_users([user.id])
    assert ghosts == []
    assert leased_at_delete  # the race was run: fills were under way at some deletes


def test_a_fill_read_before_an_admin_edit_does_not_replace_it(
    user_factory, clean_user_cache, django_capture_on_commit_callbacks
):
    """A reader loads the row, an edit commits and caches the new state, then the reader's fill
    arrives: the edit stays (an older ingested version used to win over the edit's version 0)."""
    user = user_factory(first_name="Old", source_run_id=5, source_line=2)
    clean_user_cache(user.id)
    lease = cache.user_fill_lease(user.id)
    assert lease is not None
    assert cached(user.id) is None  # a lease reads as a miss
    old = user_payload(User.objects.get(id=user.id))
    with django_capture_on_commit_callbacks(execute=True):
        user_update(user=user, fields={"first_name": "New"})
    assert not cache.cache_user_fill(user.id, lease=lease, version=5 * 10**9 + 2, payload=old)
    assert cached(user.id)["first_name"] == "New"


def test_delete_of_a_missing_user_clears_its_key_and_answers_404(
    writer_client, reader_client, redis_client, clean_user_cache, django_capture_on_commit_callbacks
):
    clean_user_cache(7_100_000)
    redis_client.set(cache.user_key(7_100_000), cache.encode_entry(0, b'{"id":7100000}'))
    assert reader_client.get("/users/7100000").status_code == 200  # a ghost: cached, no row
    with django_capture_on_commit_callbacks(execute=True):
        assert writer_client.delete("/users/7100000").status_code == 404
    assert not redis_client.exists(cache.user_key(7_100_000))
    assert reader_client.get("/users/7100000").status_code == 404


# --- Keys name the database ----------------------------------------------------------------------


def _identity_of_database(name: str) -> str:
    import psycopg

    with psycopg.connect(database_url().rsplit("/", 1)[0] + f"/{name}") as connection:
        return cache.database_identity(connection.cursor())


def test_a_database_dropped_and_made_again_gets_new_cache_keys():
    """Entries cached from a database are not read once it has been made again under the same
    name: the keys carry the database's identity (before, a recreated database kept reading
    the old one's users, deleted ones included)."""
    import psycopg

    name = f"viswals_namespace_{os.getpid()}"
    maintenance = database_url().rsplit("/", 1)[0] + "/postgres"
    identities = []
    with psycopg.connect(maintenance, autocommit=True) as admin:
        try:
            for _ in range(2):
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
                admin.execute(f'CREATE DATABASE "{name}"')
                identities.append(_identity_of_database(name))
                identities.append(_identity_of_database(name))  # stable while it lives
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    assert identities[0] == identities[1] and identities[2] == identities[3]
    assert identities[0] != identities[2]
    assert identities[0] != _identity_of_database(settings.DATABASES["default"]["NAME"])


def test_user_and_principal_keys_carry_the_database_identity(settings):
    namespace = cache.database_namespace()
    assert cache.user_key(7) == f"{settings.USERS_CACHE_PREFIX}:{namespace}:7"
    assert cache.principal_key("d") == f"{settings.USERS_CACHE_PREFIX}:{namespace}:auth:d"


def test_the_fast_read_finds_the_database_identity_on_its_first_use(redis_client, clean_user_cache):
    """A web process' first request may be the async fast read: it asks PostgreSQL in a thread
    (not on the event loop) and reads the same key as the sync path."""
    clean_user_cache(7_200_000)
    redis_client.set(cache.user_key(7_200_000), cache.encode_entry(0, b'{"id":7200000}'))
    cache._namespaces.clear()
    read = asyncio.run(
        cache.afast_read(7_200_000, digest=None, anon_window=None, account_window=None)
    )
    assert read.user_json == b'{"id":7200000}'


@pytest.mark.parametrize("new", [True, False])
def test_an_ingested_write_voids_a_pending_fill(user_factory, clean_user_cache, new):
    """Both ingest write paths (SET NX for new users, the version script) replace a lease, so
    the reader's older row is not stored over the ingested one."""
    user = user_factory(first_name="Old")
    clean_user_cache(user.id)
    lease = cache.user_fill_lease(user.id)
    old = user_payload(user)
    cache.cache_users_if_newer([(user.id, 7, to_json({**old, "first_name": "Ingested"}))], new=new)
    assert not cache.cache_user_fill(user.id, lease=lease, version=0, payload=old)
    assert cached(user.id)["first_name"] == "Ingested"
