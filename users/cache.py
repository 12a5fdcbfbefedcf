"""Every Redis key and every cache read/write for users.

A user is cached as a hash `<USERS_CACHE_PREFIX>:<id>` with two fields: `json` (the user payload,
see payloads.py) and `v` (the version of the write: ingest run and line, 0 for API/admin writes).
Ingest writes are conditional on the version, so when two workers commit the same id out of
order the cache still ends with what PostgreSQL holds. Redis failures are logged, never raised:
PostgreSQL is the source of truth and reads fall back to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from users.payloads import to_json

logger = logging.getLogger(__name__)

# Set each user only if the cached version is not newer. Entries travel as two strings rather
# than three arguments per user: packing thousands of arguments costs more than the Redis work.
# ARGV: ttl in ms (0 = none), key prefix, "id:version,id:version,...", payloads joined by "\n"
# (JSON text never holds a raw newline). Keys are built here, so this needs a single Redis node.
_SET_IF_NEWER = """
local ttl, prefix = tonumber(ARGV[1]), ARGV[2]
local payloads = string.gmatch(ARGV[4], "[^\\n]+")
local count = 0
for id, version in string.gmatch(ARGV[3], "(%d+):(%d+)") do
  local key = prefix .. id
  local payload = payloads()
  local current = redis.call('HGET', key, 'v')
  if (not current) or tonumber(current) <= tonumber(version) then
    redis.call('HSET', key, 'v', version, 'json', payload)
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
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
    """Order of ingest writes: a later run wins, then a later line (fits a Lua number)."""
    return run_id * 1_000_000_000 + line


def _ttl_ms() -> int:
    return max(settings.USERS_CACHE_TTL, 0) * 1000


def _set_if_newer_script(client):
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(_SET_IF_NEWER)
    return script


def cache_users_if_newer(entries: Iterable[tuple[int, int, str]]) -> None:
    """Store (id, version, payload JSON) triples in one round trip, skipping older versions."""
    ids: list[str] = []
    payloads: list[str] = []
    for user_id, version, payload_json in entries:
        ids.append(f"{user_id}:{version}")
        payloads.append(payload_json)
    if not ids:
        return
    try:
        client = redis_client()
        _set_if_newer_script(client)(
            keys=[],
            args=[_ttl_ms(), user_key(""), ",".join(ids), "\n".join(payloads)],
            client=client,
        )
    except RedisError:
        logger.exception("cache: could not store %d users; reads fall back to PostgreSQL", len(ids))


def cache_user(payload: dict) -> None:
    """Store one user unconditionally (API and admin writes: they are the newest state)."""
    key = user_key(payload["id"])
    try:
        pipe = redis_client().pipeline(transaction=True)
        pipe.hset(key, mapping={"v": 0, "json": to_json(payload)})
        if _ttl_ms():
            pipe.pexpire(key, _ttl_ms())
        pipe.execute()
    except RedisError:
        logger.exception("cache: could not store user %s", payload["id"])


def cache_user_if_absent(user_id: int, version: int, payload: dict) -> None:
    """Fill the cache after a miss (cache-aside), never overwriting a newer entry."""
    cache_users_if_newer([(user_id, version, to_json(payload))])


def cached_user_json(user_id: int) -> bytes | None:
    """The cached JSON of a user, or None on a miss or when Redis is unavailable."""
    try:
        return redis_client().hget(user_key(user_id), "json")
    except RedisError:
        logger.warning("cache: Redis unavailable reading user %s; using PostgreSQL", user_id)
        return None


def forget_users(user_ids: Iterable[int]) -> None:
    keys = [user_key(user_id) for user_id in user_ids]
    if not keys:
        return
    try:
        redis_client().delete(*keys)
    except RedisError:
        logger.exception("cache: could not delete %d users", len(keys))
