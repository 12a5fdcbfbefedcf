"""Fixed-window rate limits: each client's current window (per account for authenticated
clients, settings.API_USER_THROTTLE_RATE; per client address for anonymous ones,
API_ANON_THROTTLE_RATE) and its counter, one atomic INCR (or INCRBY) per request, shared by every
web process through the cache's Redis, so a limit holds across workers. Rates are
"<n>/<second|minute|hour|day>" (empty: no limit), read at call time. The keys are
users.cache.throttle_key's. The API's throttle (users.api.throttling), the hot read (which
counts its hit inside its own script, users.cache.afast_read) and the stream all use these
windows."""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import NamedTuple

from django.conf import settings
from redis.exceptions import RedisError

from users import cache
from users.redis import cache_client

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Window(NamedTuple):
    """The current fixed window of one client: its counter key, length, limit, seconds left."""

    key: str
    seconds: int
    limit: int
    left: float


@lru_cache(maxsize=8)
def parse_rate(rate: str) -> tuple[int, int] | None:
    """(requests, period in seconds), or None for no limit."""
    if not rate:
        return None
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[0]]


def _window(setting: str, scope: str, ident: str) -> Window | None:
    rate = parse_rate(getattr(settings, setting, ""))
    if rate is None:
        return None
    limit, period = rate
    now = time.time()
    number = int(now // period)
    key = cache.throttle_key(scope=scope, ident=ident, window=number)
    return Window(key, period, limit, (number + 1) * period - now)


def anon_window(address: str) -> Window | None:
    return _window("API_ANON_THROTTLE_RATE", "anon", address)


def account_window(account_id: int) -> Window | None:
    return _window("API_USER_THROTTLE_RATE", "user", str(account_id))


def account_window_parts() -> tuple[str, str, Window] | None:
    """The current account window with its key split around the account id (the fast read's
    Redis script puts in the id it finds in the token's cached principal)."""
    window = _window("API_USER_THROTTLE_RATE", "user", "\0")
    if window is None:
        return None
    prefix, suffix = window.key.split("\0")
    return prefix, suffix, window


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


class AccountHit(NamedTuple):
    """An account's request counted, and the account's last write position read with it."""

    count: int
    written_lsn: int | None  # users.cache.written_lsn: None when none is remembered


def account_hit(window: Window, *, account_id: int) -> AccountHit | None:
    """throttle_hit on an account's window that also reads, in the same round trip, the
    account's last write position (users.consistency: a read routed by read-your-writes needs
    it, and would otherwise ask Redis a second time). None when Redis is unavailable."""
    try:
        pipe = cache_client().pipeline(transaction=False)
        pipe.incr(window.key)
        pipe.expire(window.key, window.seconds, nx=True)
        cache.queue_written_lsn(pipe, account_id)
        count, _, score = pipe.execute()
    except RedisError:
        logger.warning("cache: Redis unavailable for rate limiting; request allowed")
        return None
    return AccountHit(count, cache.written_lsn_reply(score))


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
