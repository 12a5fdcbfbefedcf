"""Every Redis client the project's code talks through, and the one way Lua scripts are
registered (their sources are the files users/lua/*.lua). Keys are built in users.cache; what
is stored under them lives with its module (users.cache, users.ratelimit, users.stream).

Two Redis roles, which may be the same server:

- the cache (settings.CACHES["default"], django-redis): users, token principals, rate-limit
  windows. `cache_client()` is django-redis' own client; `async_cache_client()` a
  redis.asyncio client to the same location for the hot read, one per event loop
  (redis.asyncio connections belong to the loop that opened them; uvicorn runs one loop per
  worker, tests may run several); `redis_ping()` asks it whether it answers, for /readyz.
- the stream (settings.STREAM_REDIS): the event history, stream slots, principal-change
  notices. `stream_client()` for the web and worker threads (strings decoded), and
  `stream_reader_client()` for a process's history reader task.

Clients are looked up at call time, so a settings override (tests) applies.

With Sentinel (settings.REDIS_SENTINEL) every client here is Sentinel-managed: it asks the
Sentinels for the primary's address when it connects, and a connection that fails (the primary
died) or finds a replica where the primary was (a failover demoted it) is dropped, so the next
command reaches the new primary. Reads go to the primary too: never to a replica that may lack
a write just made.

`set_absent_many` writes Redis' wire protocol by hand and drives a redis-py connection
directly (get_connection, send_packed_command, read_response): it was written against
redis-py WRITTEN_FOR_REDIS_PY, and tests/users/test_redis.py fails when the pin moves, or when
its bytes differ from what redis-py itself would send.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import weakref
from pathlib import Path
from typing import Any

from django.conf import settings

# --- The cache's Redis ------------------------------------------------------------------------


def cache_client():
    """The shared Redis client of django-redis' default cache."""
    from django_redis import get_redis_connection

    return get_redis_connection("default")


_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def async_cache_client():
    """A redis.asyncio client for the running event loop, to the default cache's location with
    its timeouts (through the Sentinels when there are)."""
    import redis.asyncio as aioredis

    config = settings.CACHES["default"]
    url = _cache_url()
    per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    key = (url, _sentinel_key())
    client = per_loop.get(key)
    if client is None:
        options = config.get("OPTIONS", {})
        timeouts = {
            "socket_connect_timeout": options.get("SOCKET_CONNECT_TIMEOUT", 0.5),
            "socket_timeout": options.get("SOCKET_TIMEOUT", 1.0),
        }
        if settings.REDIS_SENTINEL:
            client = sentinel_primary(
                asynchronous=True, **_url_credentials(url), **timeouts, max_connections=64
            )
        else:
            client = aioredis.Redis.from_url(url, **timeouts, max_connections=64)
        per_loop[key] = client
    return client


# --- Sentinel ---------------------------------------------------------------------------------


def _sentinel_key() -> tuple:
    config = settings.REDIS_SENTINEL
    if not config:
        return ()
    return (tuple(config["sentinels"]), config["master"], config["sentinel_kwargs"]["password"])


def _url_credentials(url: str) -> dict[str, Any]:
    """The database and credentials of a Redis URL: what a Sentinel-managed client keeps of it
    (its host is the Sentinels' business)."""
    import redis.connection

    parts = redis.connection.parse_url(url.split("?", 1)[0])
    return {key: parts[key] for key in ("db", "username", "password") if parts.get(key)}


def sentinel_primary(*, asynchronous: bool = False, **connection_kwargs):
    """A client (redis.Redis, or redis.asyncio.Redis) to the primary the Sentinels of
    settings.REDIS_SENTINEL name now, and after each failover."""
    config = settings.REDIS_SENTINEL
    if asynchronous:
        from redis.asyncio.sentinel import Sentinel
    else:
        from redis.sentinel import Sentinel
    sentinel = Sentinel(config["sentinels"], sentinel_kwargs=config["sentinel_kwargs"])
    return sentinel.master_for(config["master"], **connection_kwargs)


def _cache_url() -> str:
    location = settings.CACHES["default"]["LOCATION"]
    return location[0] if isinstance(location, list | tuple) else location


def redis_ping(*, timeout: float) -> None:
    """Ping the Redis of settings.REDIS_URL (the one the cache's and the stream's settings are
    derived from) for /readyz, on a connection of its own, opened and closed here, waiting at
    most `timeout` seconds to connect and for the answer; raises when Redis does not answer
    (redis.RedisError or OSError)."""
    import redis

    timeouts = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    if settings.REDIS_SENTINEL:
        _ping_sentinel_primary(**timeouts)
        return
    client = redis.Redis.from_url(settings.REDIS_URL, **timeouts)
    try:
        client.ping()
    finally:
        client.close()


def _ping_sentinel_primary(**timeouts: float) -> None:
    """Ask the Sentinels for the primary and check that the server there answers as a primary:
    a Sentinel behind a failover could name a replica, which must not pass (it refuses writes)."""
    import redis
    from redis.sentinel import Sentinel

    config = settings.REDIS_SENTINEL
    host, port = Sentinel(
        config["sentinels"], sentinel_kwargs=config["sentinel_kwargs"]
    ).discover_master(config["master"])
    credentials = {
        key: value
        for key, value in _url_credentials(settings.REDIS_URL).items()
        if key in ("username", "password")
    }
    client = redis.Redis(host=host, port=port, **credentials, **timeouts)
    try:
        role = client.execute_command("ROLE")[0]
    finally:
        client.close()
    if role not in (b"master", "master"):
        raise redis.ConnectionError(f"the Sentinels' primary answers as {role!r}")


# --- The stream's Redis -----------------------------------------------------------------------

_stream_lock = threading.Lock()
_stream_clients: dict[tuple, Any] = {}


# A call to the stream's Redis is tried again at most this many times, after 50, 100 and 200 ms
# (jittered): enough for a pooled connection that Redis dropped (a restart) to be replaced,
# while a write's request or task waits at most about 0.4 s for a Redis that refuses
# connections (redis-py's default, 10 tries up to 1 s apart, held each one ~3.7 s; the write
# stands either way and the missed event is logged). Not under Sentinel (stream_client).
STREAM_RETRIES = 3


def stream_retry():
    """The stream client's retry policy (STREAM_RETRIES)."""
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry

    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.2), STREAM_RETRIES)


def stream_client():
    """The stream's Redis (settings.STREAM_REDIS), strings decoded: one thread-safe client per
    process and settings, shared by every thread."""
    import redis

    key = (tuple(sorted(settings.STREAM_REDIS.items())), _sentinel_key())
    client = _stream_clients.get(key)
    if client is None:
        with _stream_lock:
            client = _stream_clients.get(key)
            if client is None:
                options = {**settings.STREAM_REDIS, "decode_responses": True}
                if settings.REDIS_SENTINEL:
                    # redis-py's default retries (~3.7 s) ride out the Sentinels' failover.
                    client = sentinel_primary(**options)
                else:
                    client = redis.Redis(**options, retry=stream_retry())
                _stream_clients[key] = client
    return client


def stream_reader_client(*, block_seconds: float):
    """A new redis.asyncio client to the stream's Redis for a history reader task, which owns
    and closes it: no retries (every failure goes back to the reader, which connects again),
    a socket timeout a little longer than its blocking reads, keep-alive, named for CLIENT LIST."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options = {
        **settings.STREAM_REDIS,
        "retry": Retry(NoBackoff(), 0),
        "socket_timeout": block_seconds + 5,
        "socket_keepalive": True,
        "decode_responses": True,
        "client_name": f"{settings.STREAM_KEY_PREFIX}:reader",
    }
    if settings.REDIS_SENTINEL:
        return sentinel_primary(asynchronous=True, **options)
    return Redis(**options)


# --- Lua scripts ------------------------------------------------------------------------------
# Every script's source is a file of its own, users/lua/<name>.lua, shipped with the package
# (the image copies the tree); the file's opening comment says what the script does, for whom,
# and what its KEYS and ARGV are.

LUA_DIRECTORY = Path(__file__).resolve().parent / "lua"
_LUA_INCLUDE = re.compile(r"^--#include (\w+)$", re.MULTILINE)

_scripts: dict[tuple[int, str], Any] = {}


@functools.cache
def lua_source(name: str) -> str:
    """The source of the Lua script `name` (users/lua/<name>.lua), read once per process."""
    if not name.isidentifier():  # a name, never a path
        raise ValueError(f"not a Lua script name: {name!r}")
    source = (LUA_DIRECTORY / f"{name}.lua").read_text(encoding="utf-8")
    # "--#include <name>" puts another file's functions in (a script cannot call another).
    return _LUA_INCLUDE.sub(lambda match: lua_source(match[1]), source)


def script(client, name: str):
    """The Lua script `name` (users/lua/<name>.lua) registered on `client` (sync or asyncio),
    once per client: calling it runs EVALSHA, loading the script again after a Redis restart or
    flush."""
    key = (id(client), name)
    registered = _scripts.get(key)
    if registered is None:
        registered = _scripts[key] = client.register_script(lua_source(name))
    return registered


# --- SET ... NX in bulk, in Redis' protocol ---------------------------------------------------

WRITTEN_FOR_REDIS_PY = "8.1.0"


def pack_set_absent(key: bytes, value: bytes, ttl_ms: int) -> bytes:
    """`SET key value [PX ttl_ms] NX` in Redis' protocol (RESP), as redis-py would pack it."""
    if ttl_ms:
        head = b"*6\r\n$3\r\nSET\r\n"
        tail = b"$2\r\nPX\r\n$%d\r\n%d\r\n$2\r\nNX\r\n" % (len(str(ttl_ms)), ttl_ms)
    else:
        head, tail = b"*4\r\n$3\r\nSET\r\n", b"$2\r\nNX\r\n"
    return b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n%s" % (head, len(key), key, len(value), value, tail)


def set_absent_many(client, pairs: list[tuple[bytes, bytes]], *, ttl_ms: int) -> list[bool]:
    """`SET key value PX ttl NX` for each (key, value), pipelined in one write on one of the
    client's connections; for each, whether it was set (False: the key was there). Written out
    by hand: redis-py's own pipeline spent 9.5 us per command in Python, this 1.5 us."""
    commands = b"".join(pack_set_absent(key, value, ttl_ms) for key, value in pairs)
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([commands], check_health=False)
        replies = [connection.read_response() for _ in pairs]
    except BaseException:
        connection.disconnect()  # replies may be left unread: never reuse it
        raise
    finally:
        pool.release(connection)
    return [reply is not None for reply in replies]
