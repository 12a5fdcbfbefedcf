"""Fixed-window rate-limit counters: one atomic INCR (or INCRBY) per request, shared by every
web process through the cache's Redis, so a limit holds across workers. The windows and their
limits are users.api.throttling's; the keys are users.cache.throttle_key's. The hot read counts
its hit inside its own script (users.cache.afast_read)."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from users.redis import cache_client

logger = logging.getLogger(__name__)


def throttle_hit(key: str, *, ttl: int) -> int | None:
    """Count one request against a window; the count so far, or None when Redis is unavailable."""
    try:
        pipe = cache_client().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, ttl, nx=True)
        return pipe.execute()[0]
    except RedisError:
        logger.warning("cache: Redis unavailable for rate limiting; request allowed")
        return None


def throttle_charge(key: str, *, ttl: int, amount: int) -> int | None:
    """Count `amount` requests against a window at once (a stream's connect and the history it
    replays); the count so far, or None when Redis is unavailable (allowed, as throttle_hit)."""
    try:
        pipe = cache_client().pipeline(transaction=False)
        pipe.incrby(key, amount)
        pipe.expire(key, ttl, nx=True)
        return pipe.execute()[0]
    except RedisError:
        logger.warning("cache: Redis unavailable for rate limiting; stream allowed")
        return None
