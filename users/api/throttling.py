"""Rate limits, counted in the shared Redis (users.cache) so a limit holds across every web
process: per account for authenticated clients (settings.API_USER_THROTTLE_RATE), per client
address for anonymous ones (API_ANON_THROTTLE_RATE). Rates are "<n>/<second|minute|hour|day>"
(empty: no limit), read at call time.

Hand-written rather than DRF's SimpleRateThrottle: that one keeps a list of timestamps per client
in the cache (a read and a write of a growing list per request, racing between processes); a
fixed window is one atomic INCR, which the fast read path (users.api.fast_read) folds into the
same Redis round trip as the user it reads.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import NamedTuple

from django.conf import settings
from rest_framework.exceptions import Throttled
from rest_framework.throttling import BaseThrottle

from users import cache, ratelimit
from users.api.authentication import request_principal
from viswals.client_address import request_client_address

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


def charge_token_lookup(request) -> None:
    """Count a token lookup (a token whose principal Redis does not hold) against the client
    address' window before PostgreSQL is asked; raise Throttled past its limit. A client that
    sends made-up tokens is limited like an anonymous one: authentication fails before the
    throttle classes run, so nothing else would count it."""
    window = anon_window(request_client_address(request))
    if window is None:
        return
    count = ratelimit.throttle_hit(window.key, ttl=window.seconds)
    if count is not None and count > window.limit:
        raise Throttled(wait=window.left)


class ClientRedisThrottle(BaseThrottle):
    """Fixed-window limit per account, or per client address for anonymous requests."""

    def __init__(self) -> None:
        self.wait_seconds: float | None = None

    def allow_request(self, request, view) -> bool:
        principal = request_principal(request)
        if principal is not None:
            window = account_window(principal.account_id)
        else:
            window = anon_window(request_client_address(request))
        if window is None:
            return True
        count = ratelimit.throttle_hit(window.key, ttl=window.seconds)
        if count is None or count <= window.limit:
            return True
        self.wait_seconds = window.left
        return False

    def wait(self) -> float | None:
        return self.wait_seconds
