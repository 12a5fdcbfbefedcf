"""users.redis: the hand-written Redis protocol matches redis-py's, on the redis-py it was
written for; one script registration per client and name, from users/lua/."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
from redis.connection import Connection

from tests.support.environment import ROOT
from users import redis as users_redis


def _pinned(package: str) -> str | None:
    pin = re.search(rf"^{package}==(\S+)", (ROOT / "requirements.txt").read_text(), re.M | re.I)
    return pin[1] if pin else None


def test_the_protocol_writer_was_written_for_the_pinned_redis_py():
    assert _pinned("redis") == users_redis.WRITTEN_FOR_REDIS_PY, (
        "requirements.txt moved redis-py: check users.redis.set_absent_many (get_connection, "
        "send_packed_command, read_response) against it, then update WRITTEN_FOR_REDIS_PY"
    )
    assert version("redis") == users_redis.WRITTEN_FOR_REDIS_PY


@pytest.mark.parametrize("ttl_ms", [0, 7, 604_800_000])
def test_set_absent_is_packed_as_redis_py_packs_it(ttl_ms):
    key, value = b"p:db:42", '3|{"id":42,"first_name":"Zoë"}'.encode()
    args = ("SET", key, value, *(("PX", ttl_ms) if ttl_ms else ()), "NX")
    expected = b"".join(Connection().pack_command(*args))  # packs, never connects
    assert users_redis.pack_set_absent(key, value, ttl_ms) == expected


def test_set_absent_many_sets_only_missing_keys(redis_client, settings):
    prefix = f"{settings.USERS_CACHE_PREFIX}:test-set-absent:".encode()
    keys = [prefix + b"1", prefix + b"2"]
    redis_client.set(keys[0], b"kept")
    try:
        stored = users_redis.set_absent_many(
            redis_client, [(keys[0], b"new"), (keys[1], b"new")], ttl_ms=60_000
        )
        assert stored == [False, True]
        assert redis_client.get(keys[0]) == b"kept" and redis_client.get(keys[1]) == b"new"
        assert 0 < redis_client.pttl(keys[1]) <= 60_000
    finally:
        redis_client.delete(*keys)


def test_a_script_is_registered_once_per_client_and_name(redis_client):
    first = users_redis.script(redis_client, "cache_release_lease")
    assert users_redis.script(redis_client, "cache_release_lease") is first
    assert users_redis.script(redis_client, "stream_slot_renew") is not first
    assert first(keys=["tests:redis:no-such-key"], args=["lease"]) == 0


def test_every_lua_file_is_a_script_redis_accepts(redis_client):
    names = sorted(path.stem for path in users_redis.LUA_DIRECTORY.glob("*.lua"))
    assert names, "no Lua scripts found in users/lua"
    for name in names:
        sha = redis_client.script_load(users_redis.lua_source(name))
        assert redis_client.script_exists(sha) == [True], name


def test_a_script_name_is_never_a_path():
    with pytest.raises(ValueError):
        users_redis.lua_source("../redis")


def test_redis_ping_answers_and_raises_when_redis_does_not(settings):
    from redis.exceptions import ConnectionError as RedisConnectionError

    users_redis.redis_ping(timeout=0.5)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    with pytest.raises(RedisConnectionError):
        users_redis.redis_ping(timeout=0.5)


def test_the_image_ships_the_lua_scripts():
    """The Dockerfile copies the tree (COPY . .) and .dockerignore leaves users/lua/ in."""
    from fnmatch import fnmatch

    assert any(line.split() == ["COPY", ".", "."] for line in (ROOT / "Dockerfile").open())
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    script = users_redis.LUA_DIRECTORY / "cache_fast_read.lua"
    path = script.relative_to(ROOT)
    for candidate in (path, *path.parents):
        if str(candidate) != ".":
            assert not any(fnmatch(str(candidate), pattern) for pattern in ignored), candidate


def test_a_stream_redis_that_refuses_connections_fails_a_call_within_half_a_second(settings):
    """The stream client's own retry policy (users.redis.STREAM_RETRIES), not redis-py's
    default (~3.7 s): a write's request or task is held briefly when the stream's Redis is away."""
    import time

    from redis.exceptions import ConnectionError as RedisConnectionError

    from tests.support.servers import free_port

    settings.REDIS_SENTINEL = None
    settings.STREAM_REDIS = {**settings.STREAM_REDIS, "host": "127.0.0.1", "port": free_port()}
    client = users_redis.stream_client()
    assert client.get_retry().get_retries() == users_redis.STREAM_RETRIES
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        client.ping()
    assert time.monotonic() - started < 0.5
