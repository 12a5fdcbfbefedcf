"""Every Redis key (the users cache's, the rate-limit windows', the stream's) and every cache
read/write for users. Clients and script registration are users.redis'; the rate-limit counters
users.ratelimit's.

A user is cached as a string `<USERS_CACHE_PREFIX>:<database>:<id>` (see database_namespace)
holding `<version>|<json>`: the version of the write (ingest run and line, 0 for API/admin
writes) and the user payload (payloads.py).
A plain string rather than a hash: a 200-byte payload pushes a hash out of Redis' compact
encoding, which doubles the memory per user. Ingest writes are conditional on the version, so
when two workers commit the same id out of order the cache still ends with what PostgreSQL
holds. Redis failures are logged, never raised:
PostgreSQL is the source of truth and reads fall back to it.

A read that misses fills the cache under a lease (see `user_fill_lease`), so a fill can never
outlive a write or a delete that commits while the reader is between PostgreSQL and Redis.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from typing import NamedTuple

from django.conf import settings
from redis.exceptions import RedisError

from users.payloads import to_json
from users.redis import async_cache_client, cache_client, script, set_absent_many

logger = logging.getLogger(__name__)


# The cache's client (users.redis), under the name the rest of the project knows it by.
redis_client = cache_client


# --- The database a cache belongs to --------------------------------------------------------
# Keys of database rows (users, token principals) are `<USERS_CACHE_PREFIX>:<database>:...`,
# where <database> names the PostgreSQL database the entries were read from. A database dropped
# and created again (`make run` after a reset, a new volume) gets a new name here, so entries of
# the old one (users since deleted, edits since lost) are never read back: they expire unseen
# after USERS_CACHE_TTL. The name is a digest of the cluster's system identifier (new for every
# initdb) and the database's OID (new for every CREATE DATABASE, a dump restored into a new
# database included); no table to keep, so emptying the tables (`manage.py flush`, as the tests
# do) keeps it. Looked up once per process.


class CacheNamespaceUnavailable(RedisError):
    """The database the cache belongs to could not be asked which it is (PostgreSQL down at a
    process' first use of the cache): callers treat it as Redis being unavailable."""


_namespaces: dict[tuple, str] = {}


def _database_signature() -> tuple:
    from django.db import connection

    db = connection.settings_dict
    return (db["NAME"], db.get("HOST"), db.get("PORT"))


def database_identity(cursor) -> str:
    """A short name of the database `cursor` is connected to: the same as long as the database
    lives, different once it is dropped and made again (or its cluster is)."""
    cursor.execute("SELECT has_function_privilege('pg_control_system()', 'execute')")
    system = "-"
    if cursor.fetchone()[0]:  # managed services may withhold it; the OID still tells apart
        cursor.execute("SELECT system_identifier::text FROM pg_control_system()")
        system = cursor.fetchone()[0]
    cursor.execute("SELECT oid::text, datname FROM pg_database WHERE datname = current_database()")
    oid, name = cursor.fetchone()
    return hashlib.sha256(f"{system}/{oid}/{name}".encode()).hexdigest()[:10]


def database_namespace() -> str:
    """The namespace of this process' database (database_identity), asked once."""
    signature = _database_signature()
    namespace = _namespaces.get(signature)
    if namespace is None:
        from django.db import DatabaseError, connection

        try:
            with connection.cursor() as cursor:
                namespace = database_identity(cursor)
        except DatabaseError as error:
            raise CacheNamespaceUnavailable(f"cannot identify the database: {error}") from error
        _namespaces[signature] = namespace
    return namespace


async def adatabase_namespace() -> str:
    """database_namespace from async code: PostgreSQL is asked in a thread the first time."""
    namespace = _namespaces.get(_database_signature())
    if namespace is None:
        from asgiref.sync import sync_to_async

        namespace = await sync_to_async(_database_namespace_released)()
    return namespace


def _database_namespace_released() -> str:
    """database_namespace, handing back the connection it opened: the thread it runs in is
    outside any request, where nobody else would."""
    from django.db import connection

    try:
        return database_namespace()
    finally:
        if not connection.in_atomic_block:
            connection.close()


def _row_prefix() -> str:
    return f"{settings.USERS_CACHE_PREFIX}:{database_namespace()}"


def user_key(user_id: int) -> str:
    return f"{_row_prefix()}:{user_id}"


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
    """The JSON of a stored entry; None for None and for a fill's lease (a miss)."""
    if entry is None or not entry[:1].isdigit():
        return None
    return entry.partition(b"|")[2]


def _ttl_ms() -> int:
    return max(settings.USERS_CACHE_TTL, 0) * 1000


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
            script(client, "cache_set_if_newer")(keys=[], args=args, client=client)
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
    (bench/bench_cache_write.py: 2.3 against 5.2 us per user); the commands are written out
    in Redis' protocol (users.redis.set_absent_many)."""
    prefix = user_key("").encode()
    pairs = [
        (b"%s%d" % (prefix, user_id), encode_entry(version, payload_json))
        for user_id, version, payload_json in entries
    ]
    stored = set_absent_many(client, pairs, ttl_ms=_ttl_ms())
    return [entry for entry, was_set in zip(entries, stored, strict=True) if not was_set]


def cache_user(payload: dict) -> bool:
    """Store one user unconditionally (API and admin writes: they are the newest state).
    False when Redis could not be written (logged)."""
    try:
        key = user_key(payload["id"])
        redis_client().set(key, encode_entry(0, to_json(payload)), px=_ttl_ms() or None)
    except RedisError:
        logger.exception("cache: could not store user %s", payload["id"])
        return False
    return True


# --- Filling the cache after a miss (cache-aside), under a lease ------------------------------
# A reader that misses takes a lease on the key (`SET key lease NX PX`) *before* it reads
# PostgreSQL, and fills the key only if it still holds that same lease (one script: compare and
# set). Every write after commit replaces the key (`cache_user`, the ingest scripts: a lease is
# not a versioned entry, so the version check lets any write through) and every delete removes
# it (`forget_users`), so any write or delete that commits after the reader's snapshot of the row
# voids the lease, and the older row is dropped rather than stored for USERS_CACHE_TTL. No timing
# is assumed: a lease that expires before its fill just makes the fill a no-op.
#
# Chosen over the alternatives: a tombstone left by deletes is only safe if it outlives the
# slowest fill (a reader paused longer than its TTL still brings the user back) and needs a
# second mechanism for updates; a version compare cannot order an API/admin write (version 0,
# not tied to a file line) against an older ingested row. The lease costs one extra Redis
# command on a miss, which also reads PostgreSQL, and nothing on a hit; readers see a lease as
# a miss (`entry_json`), so the fast path's script is unchanged. Concurrent misses of one id:
# the first takes the lease and fills, the others read PostgreSQL and do not fill.
FILL_LEASE_MS = 10_000  # longer than a read from PostgreSQL takes; expiry only costs a fill
_LEASE_PREFIX = "lease:"  # not a digit: never mistaken for a "<version>|<json>" entry


def user_fill_lease(user_id: int) -> str | None:
    """Take the right to fill a user's missing entry, before reading PostgreSQL; None when the
    key is there already (another reader's lease, or a write since the miss) or Redis fails:
    the caller then reads PostgreSQL without filling."""
    lease = f"{_LEASE_PREFIX}{secrets.token_hex(8)}"
    try:
        taken = redis_client().set(user_key(user_id), lease, nx=True, px=FILL_LEASE_MS)
    except RedisError:
        logger.warning("cache: Redis unavailable leasing user %s; using PostgreSQL", user_id)
        return None
    return lease if taken else None


def cache_user_fill(user_id: int, *, lease: str, version: int, payload: dict) -> bool:
    """Fill a user's entry read from PostgreSQL under `lease`; True when stored, False when a
    write or delete came first (or Redis failed), which leaves that newer state in place."""
    client = redis_client()
    try:
        stored = script(client, "cache_fill_if_leased")(
            keys=[user_key(user_id)],
            args=[lease, encode_entry(version, to_json(payload)), _ttl_ms()],
            client=client,
        )
    except RedisError:
        logger.warning("cache: could not fill user %s", user_id)
        return False
    return bool(stored)


def user_fill_lease_release(user_id: int, lease: str) -> None:
    """Drop a lease whose read found no row, so the key of a missing user does not linger."""
    client = redis_client()
    try:
        script(client, "cache_release_lease")(keys=[user_key(user_id)], args=[lease], client=client)
    except RedisError:
        logger.warning("cache: could not release the lease of user %s", user_id)


def cached_user_json(user_id: int) -> bytes | None:
    """The cached JSON of a user, or None on a miss or when Redis is unavailable."""
    try:
        return entry_json(redis_client().get(user_key(user_id)))
    except RedisError:
        logger.warning("cache: Redis unavailable reading user %s; using PostgreSQL", user_id)
        return None


def _delete(keys: Iterable[str], what: str) -> bool:
    """Delete keys in one round trip; False when Redis could not be reached (logged)."""
    try:
        keys = list(keys)  # built here: a key needs the database's name (database_namespace)
        if not keys:
            return True
        redis_client().delete(*keys)
    except RedisError:
        logger.exception("cache: could not delete %d %s", len(keys), what)
        return False
    return True


def forget_users(user_ids: Iterable[int]) -> bool:
    """Delete users' entries; False when Redis could not be reached (logged)."""
    return _delete((user_key(user_id) for user_id in user_ids), "users")


# --- API token principals (users.access) ---------------------------------------------------
# What a token may do, keyed by the token's digest, for a few seconds: warm reads check a token
# without PostgreSQL. Dropped when the token is revoked or its account's permissions change.


def principal_key(digest: str) -> str:
    return f"{_row_prefix()}:auth:{digest}"


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
    return _delete((principal_key(digest) for digest in digests), "token principals")


# --- Unknown tokens --------------------------------------------------------------------------
# A token PostgreSQL does not know (or knows as expired, revoked, or of an inactive account) is
# remembered as such for settings.API_INVALID_TOKEN_CACHE_SECONDS, keyed by its digest: a client
# repeating a bogus token costs Redis, not a query each time. Never longer than a few seconds, so
# a reactivated account is not refused for long.


def invalid_token_key(digest: str) -> str:
    return f"{settings.USERS_CACHE_PREFIX}:auth-invalid:{digest}"


def remember_invalid_token(digest: str, *, ttl: float) -> None:
    if ttl <= 0:
        return
    try:
        redis_client().set(invalid_token_key(digest), b"1", px=int(ttl * 1000))
    except RedisError:
        logger.warning("cache: could not remember an unknown token")


def token_known_invalid(digest: str) -> bool:
    """Whether PostgreSQL refused this token a moment ago (False when Redis is unavailable)."""
    try:
        return bool(redis_client().exists(invalid_token_key(digest)))
    except RedisError:
        logger.warning("cache: Redis unavailable checking a token; using PostgreSQL")
        return False


async def atoken_lookup_gate(
    digest: str, *, window: tuple[str, int] | None
) -> tuple[int | None, bool]:
    """Before a token is looked up in PostgreSQL (its principal was not in Redis), in one round
    trip: count a hit on the client address' window `(key, seconds)` (None: no limit), and say
    whether the token was refused a moment ago. (count or None, known invalid)."""
    try:
        pipe = async_cache_client().pipeline(transaction=False)
        if window is not None:
            pipe.incr(window[0])
            pipe.expire(window[0], window[1], nx=True)
        pipe.exists(invalid_token_key(digest))
        replies = await pipe.execute()
    except (RedisError, OSError):
        logger.warning("cache: Redis unavailable checking a token; using PostgreSQL")
        return None, False
    return (replies[0] if window is not None else None), bool(replies[-1])


# --- Rate limiting ---------------------------------------------------------------------------
# Fixed-window counters (users.ratelimit), one key per client and window. Keys live under the
# users prefix so each environment (and test run) has its own.


def throttle_key(*, scope: str, ident: str, window: int) -> str:
    """The counter of one client and window. Accounts ("user") are counted by id; anything else
    (a client address) by a digest, so no client can make a key longer than ~100 bytes."""
    if scope != "user":
        ident = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{settings.USERS_CACHE_PREFIX}:throttle:{scope}:{ident}:{window}"


# --- Async reads (the hot GET /users/{id} path) ----------------------------------------------


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
    """One round trip for GET /users/{id} (users/lua/cache_fast_read.lua). `anon_window` is
    (key, seconds), `account_window` (key prefix, key suffix, seconds) around the account id."""
    anon_key, anon_ttl = anon_window or ("", 0)
    prefix, suffix, account_ttl = account_window or ("", "", 0)
    try:
        await adatabase_namespace()  # user_key and principal_key need it
        client = async_cache_client()
        entry, principal, count = await script(client, "cache_fast_read")(
            keys=[user_key(user_id), principal_key(digest) if digest else ""],
            args=[anon_key, prefix, suffix, anon_ttl, account_ttl],
        )
    except (RedisError, OSError):
        logger.warning("cache: Redis unavailable reading user %s; using PostgreSQL", user_id)
        return FastRead(None, None, None, False)
    return FastRead(entry_json(entry or None), principal or None, count or None, True)


# --- The stream's keys (users.stream), in the stream's Redis (settings.STREAM_REDIS) ----------


def history_keys(channel: str) -> tuple[str, str, str, str, str, str]:
    """The keys holding a channel's history: last id, events, their sizes, total size, the
    deleted users' tombstones and the history's epoch (users/lua/stream_epoch.lua)."""
    prefix = settings.STREAM_KEY_PREFIX
    return (
        f"{prefix}:id:{channel}",
        f"{prefix}:log:{channel}",
        f"{prefix}:sizes:{channel}",
        f"{prefix}:bytes:{channel}",
        f"{prefix}:deleted:{channel}",
        f"{prefix}:epoch:{channel}",
    )


def streams_key(*, account_id: int | None, address: str) -> str:
    """The key counting a client's open streams: per account, else per client address (hashed:
    bounded size whatever the address looks like)."""
    prefix = settings.STREAM_KEY_PREFIX
    if account_id is not None:
        return f"{prefix}:streams:a:{account_id}"
    return f"{prefix}:streams:ip:{hashlib.sha256(address.encode()).hexdigest()[:32]}"


def principal_changes_key() -> str:
    """The capped Redis stream of "these accounts' rights changed" notices that every web
    process's stream reader follows (users.events.principals_changed, users.stream.delivery).
    It lives in the stream's Redis (settings.STREAM_REDIS), beside the event history."""
    return f"{settings.STREAM_KEY_PREFIX}:principals-changed"


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
    return written_lsn_reply(redis_client().zscore(written_lsn_key(account_id), "lsn"))


def queue_written_lsn(pipe, account_id: int) -> None:
    """Queue written_lsn's read on a pipeline that makes another call of the request, so it
    costs no round trip of its own (users.ratelimit.account_hit); its reply: written_lsn_reply."""
    pipe.zscore(written_lsn_key(account_id), "lsn")


def written_lsn_reply(score: float | None) -> int | None:
    return None if score is None else int(score)


# After a Redis failover the new primary may lack the last positions noted above (replication
# is asynchronous). The primary's replication id changes with a failover (and a restart): kept
# beside the positions with the primary's WAL insert position when the change was first seen,
# that position is a floor under every account's (users.consistency.written_lsn_floor).


def written_lsn_floor_key() -> str:
    return f"{settings.USERS_CACHE_PREFIX}:written-lsn-floor"


def written_lsn_floor(*, current_lsn) -> int:
    """The floor under every account's write position: the one stored, while the Redis primary
    is the one that stored it; else `current_lsn()` (the primary's WAL insert position now),
    stored with the new primary's replication id. Raises RedisError."""
    client = redis_client()
    pipe = client.pipeline(transaction=False)
    pipe.info("replication")
    pipe.hmget(written_lsn_floor_key(), "replid", "lsn")
    info, (stored_replid, stored_lsn) = pipe.execute()
    replid = info["master_replid"]
    if stored_replid is not None and stored_replid.decode() == replid and stored_lsn is not None:
        return int(stored_lsn)
    lsn = int(current_lsn())
    client.hset(written_lsn_floor_key(), mapping={"replid": replid, "lsn": lsn})
    logger.warning(
        "read-your-writes: the Redis primary changed (replication id %s); replicas serve an "
        "account's reads again once they replay past %s",
        replid[:8], lsn,
    )  # fmt: skip
    return lsn
