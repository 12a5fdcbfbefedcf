"""Every Redis key and every cache read/write for users.

A user is cached as a string `<USERS_CACHE_PREFIX>:<id>` holding `<version>|<json>`: the version
of the write (ingest run and line, 0 for API/admin writes) and the user payload (payloads.py).
A plain string rather than a hash: a 200-byte payload pushes a hash out of Redis' compact
encoding, which doubles the memory per user. Ingest writes are conditional on the version, so
when two workers commit the same id out of order the cache still ends with what PostgreSQL
holds. Redis failures are logged, never raised:
PostgreSQL is the source of truth and reads fall back to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Iterable
from typing import NamedTuple

import redis.asyncio as aioredis
from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from users.payloads import to_json

logger = logging.getLogger(__name__)

# Set each user only if the cached version is not newer. ARGV: ttl in ms (0 = none), key
# prefix, then an id and its stored value ("<version>|<json>") per user. One argument per
# value rather than values joined into one string: splitting that string in Lua cost Redis more
# than the SETs. Keys are built here: a single Redis node.
_SET_IF_NEWER = """
local ttl, prefix = tonumber(ARGV[1]), ARGV[2]
local find, sub, match, call = string.find, string.sub, string.match, redis.call
local count = 0
for i = 3, #ARGV, 2 do
  local key, value = prefix .. ARGV[i], ARGV[i + 1]
  local current = match(call('GETRANGE', key, 0, 20), '^(%d+)|')
  local version = sub(value, 1, find(value, "|", 1, true) - 1)
  if (not current) or tonumber(current) <= tonumber(version) then
    if ttl > 0 then call('SET', key, value, 'PX', ttl) else call('SET', key, value) end
    count = count + 1
  end
end
return count
"""
_scripts: dict[int, object] = {}


def redis_client():
    """The shared Redis client of django-redis' default cache, looked up at call time."""
    return get_redis_connection("default")


def user_key(user_id: int) -> str:
    return f"{settings.USERS_CACHE_PREFIX}:{user_id}"


def ingest_version(*, run_id: int, line: int) -> int:
    """Order of ingest writes: a later run wins, then a later line (fits a Lua number). Linear
    in the line: a batch adds each row's line to its run's version at line 0."""
    return run_id * 1_000_000_000 + line


def encode_entry(version: int, payload_json: str | bytes) -> bytes:
    """The stored form of a cached user: its version, a bar, its JSON."""
    if isinstance(payload_json, str):
        payload_json = payload_json.encode()
    return b"%d|%s" % (version, payload_json)


def entry_json(entry: bytes | None) -> bytes | None:
    """The JSON of a stored entry (None stays None)."""
    return None if entry is None else entry.partition(b"|")[2]


def _ttl_ms() -> int:
    return max(settings.USERS_CACHE_TTL, 0) * 1000


def _set_if_newer_script(client):
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(_SET_IF_NEWER)
    return script


def cache_users_if_newer(
    entries: Iterable[tuple[int, int, str | bytes]], *, new: bool = False
) -> bool:
    """Store (id, version, payload JSON) triples, skipping older versions; `new`: most of
    these users were just inserted (no entry expected). False when Redis could not be written
    (logged)."""
    entries = list(entries)
    if not entries:
        return True
    try:
        client = redis_client()
        if new:
            entries = _set_absent(client, entries)
        if entries:
            args: list = [_ttl_ms(), user_key("")]
            for user_id, version, payload_json in entries:
                args += (user_id, encode_entry(version, payload_json))
            _set_if_newer_script(client)(keys=[], args=args, client=client)
    except RedisError:
        logger.exception(
            "cache: could not store %d users; reads fall back to PostgreSQL", len(entries)
        )
        return False
    return True


def _set_absent(client, entries: list[tuple[int, int, str | bytes]]) -> list:
    """`SET key value PX ttl NX` for each entry, pipelined in one write; return the entries
    whose key was already there (for the version check). Where no entry exists, as for most
    users of an import, this is what the version check would do, at under half of Redis' CPU
    (bench/bench_cache_write.py: 2.3 against 5.2 us per user). The commands are written out
    in Redis' protocol here: redis-py's own pipeline spent 9.5 us per command in Python,
    this 1.5 us."""
    ttl = _ttl_ms()
    head = b"*6\r\n$3\r\nSET\r\n" if ttl else b"*4\r\n$3\r\nSET\r\n"
    tail = (
        b"$2\r\nPX\r\n$%d\r\n%d\r\n$2\r\nNX\r\n" % (len(str(ttl)), ttl) if ttl else b"$2\r\nNX\r\n"
    )
    prefix = user_key("").encode()
    commands = []
    for user_id, version, payload_json in entries:
        key, value = b"%s%d" % (prefix, user_id), encode_entry(version, payload_json)
        commands.append(
            b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n%s" % (head, len(key), key, len(value), value, tail)
        )
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([b"".join(commands)], check_health=False)
        replies = [connection.read_response() for _ in commands]
    except BaseException:
        connection.disconnect()  # replies may be left unread: never reuse it
        raise
    finally:
        pool.release(connection)
    return [entry for entry, reply in zip(entries, replies, strict=True) if reply is None]


def cache_user(payload: dict) -> bool:
    """Store one user unconditionally (API and admin writes: they are the newest state).
    False when Redis could not be written (logged)."""
    key = user_key(payload["id"])
    try:
        redis_client().set(key, encode_entry(0, to_json(payload)), px=_ttl_ms() or None)
    except RedisError:
        logger.exception("cache: could not store user %s", payload["id"])
        return False
    return True


def cache_user_unless_newer(user_id: int, version: int, payload: dict) -> None:
    """Fill the cache after a miss (cache-aside) unless a newer version is already there."""
    cache_users_if_newer([(user_id, version, to_json(payload))])


def cached_user_json(user_id: int) -> bytes | None:
    """The cached JSON of a user, or None on a miss or when Redis is unavailable."""
    try:
        return entry_json(redis_client().get(user_key(user_id)))
    except RedisError:
        logger.warning("cache: Redis unavailable reading user %s; using PostgreSQL", user_id)
        return None


def _delete(keys: list[str], what: str) -> bool:
    """Delete keys in one round trip; False when Redis could not be reached (logged)."""
    if not keys:
        return True
    try:
        redis_client().delete(*keys)
    except RedisError:
        logger.exception("cache: could not delete %d %s", len(keys), what)
        return False
    return True


def forget_users(user_ids: Iterable[int]) -> bool:
    """Delete users' entries; False when Redis could not be reached (logged)."""
    return _delete([user_key(user_id) for user_id in user_ids], "users")


# --- API token principals (users.access) ---------------------------------------------------
# What a token may do, keyed by the token's digest, for a few seconds: warm reads check a token
# without PostgreSQL. Dropped when the token is revoked or its account's permissions change.


def principal_key(digest: str) -> str:
    return f"{settings.USERS_CACHE_PREFIX}:auth:{digest}"


def cached_principal(digest: str) -> bytes | None:
    """A token's cached principal (users.access.Principal.encode), None on a miss or failure."""
    try:
        return redis_client().get(principal_key(digest))
    except RedisError:
        logger.warning("cache: Redis unavailable reading a token; using PostgreSQL")
        return None


def cache_principal(digest: str, encoded: str, *, ttl: float) -> None:
    if ttl <= 0:
        return
    try:
        redis_client().set(principal_key(digest), encoded, px=int(ttl * 1000))
    except RedisError:
        logger.warning("cache: could not store a token's principal")


def forget_principals(digests: Iterable[str]) -> bool:
    """Drop cached principals; False when Redis could not be reached (logged). Entries expire
    after settings.API_TOKEN_CACHE_SECONDS whatever happens, which bounds a missed drop."""
    return _delete([principal_key(digest) for digest in digests], "token principals")


# --- Rate limiting ---------------------------------------------------------------------------
# Fixed-window counters, one key per client and window: a single atomic INCR, shared by every
# web process, so a limit holds across workers. Keys live under the users prefix so each
# environment (and test run) has its own.


def throttle_key(*, scope: str, ident: str, window: int) -> str:
    """The counter of one client and window. Accounts ("user") are counted by id; anything else
    (a client address) by a digest, so no client can make a key longer than ~100 bytes."""
    if scope != "user":
        ident = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{settings.USERS_CACHE_PREFIX}:throttle:{scope}:{ident}:{window}"


def throttle_hit(key: str, *, ttl: int) -> int | None:
    """Count one request against a window; the count so far, or None when Redis is unavailable."""
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, ttl, nx=True)
        return pipe.execute()[0]
    except RedisError:
        logger.warning("cache: Redis unavailable for rate limiting; request allowed")
        return None


# --- Async reads (the hot GET /users/{id} path) ----------------------------------------------
# redis.asyncio connections belong to the event loop that opened them, so each loop gets its own
# client (uvicorn runs one loop per worker; tests may run several). Built from the default
# cache's settings at call time, so an override of CACHES applies here too.
_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def async_redis_client():
    """A redis.asyncio client for the running event loop and the default cache's location."""
    config = settings.CACHES["default"]
    location = config["LOCATION"]
    url = location[0] if isinstance(location, list | tuple) else location
    per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(url)
    if client is None:
        options = config.get("OPTIONS", {})
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT", 0.5),
            socket_timeout=options.get("SOCKET_TIMEOUT", 1.0),
            max_connections=64,
        )
        per_loop[url] = client
    return client


# The hot read in one round trip: the user's cached entry, the token's cached principal (KEYS[2];
# '' for an anonymous client) and a hit on the client's rate-limit window. An account's window
# key needs the account id, which only the cached principal holds, hence a script rather than a
# pipeline. ARGV: anonymous window key ('' = no limit), account window prefix and suffix ('' =
# no limit), anonymous and account window lengths in seconds.
_FAST_READ = """
local user = redis.call('GET', KEYS[1])
local principal, counter, ttl = false, ARGV[1], ARGV[4]
if KEYS[2] ~= '' then
  principal = redis.call('GET', KEYS[2])
  counter, ttl = '', ARGV[5]
  if principal and ARGV[2] ~= '' then
    counter = ARGV[2] .. string.match(principal, '^(%d+)') .. ARGV[3]
  end
end
local count = false
if counter ~= '' then
  count = redis.call('INCR', counter)
  if count == 1 then redis.call('EXPIRE', counter, tonumber(ttl)) end
end
return {user, principal, count}
"""


class FastRead(NamedTuple):
    user_json: bytes | None  # None: a miss, or Redis unavailable
    principal: bytes | None  # the token's cached principal; None: a miss (or no token)
    count: int | None  # requests in the client's window; None: not counted
    redis_ok: bool


async def afast_read(
    user_id: int,
    *,
    digest: str | None,
    anon_window: tuple[str, int] | None,
    account_window: tuple[str, str, int] | None,
) -> FastRead:
    """One round trip for GET /users/{id}: see _FAST_READ. `anon_window` is (key, seconds),
    `account_window` (key prefix, key suffix, seconds) around the account id."""
    anon_key, anon_ttl = anon_window or ("", 0)
    prefix, suffix, account_ttl = account_window or ("", "", 0)
    try:
        client = async_redis_client()
        script = _async_scripts.get(id(client))
        if script is None:
            script = _async_scripts[id(client)] = client.register_script(_FAST_READ)
        entry, principal, count = await script(
            keys=[user_key(user_id), principal_key(digest) if digest else ""],
            args=[anon_key, prefix, suffix, anon_ttl, account_ttl],
        )
    except (RedisError, OSError):
        logger.warning("cache: Redis unavailable reading user %s; using PostgreSQL", user_id)
        return FastRead(None, None, None, False)
    return FastRead(entry_json(entry or None), principal or None, count or None, True)


_async_scripts: dict[int, object] = {}


# --- Read-your-writes (users.consistency) -----------------------------------------------------
# The primary's WAL position after an account's last write, for a short while: a read by that
# account may go to a replica only once the replica has replayed that far.


def written_lsn_key(account_id: int) -> str:
    return f"{settings.USERS_CACHE_PREFIX}:written-lsn:{account_id}"


def note_written_lsn(account_id: int, lsn: int, *, ttl: float) -> bool:
    """Remember an account's last write position (kept if a later one is already there).
    False when Redis could not be written (logged)."""
    try:
        pipe = redis_client().pipeline(transaction=False)
        key = written_lsn_key(account_id)
        # GT: two writes of one account on two web hosts leave the later position.
        pipe.zadd(key, {"lsn": lsn}, gt=True)
        pipe.pexpire(key, max(int(ttl * 1000), 1))
        pipe.execute()
    except RedisError:
        logger.warning("cache: could not note account %s's write for read-your-writes", account_id)
        return False
    return True


def written_lsn(account_id: int) -> int | None:
    """An account's last write position, None if none is remembered. Raises RedisError: the
    caller cannot tell a stale replica read is safe without it."""
    score = redis_client().zscore(written_lsn_key(account_id), "lsn")
    return None if score is None else int(score)
