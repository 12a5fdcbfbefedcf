"""Rate limit for anonymous clients, counted in the shared Redis (users.cache) so the limit holds
across every web process. Rate: settings.API_ANON_THROTTLE_RATE ("<n>/<second|minute|hour|day>",
or empty for none), read at call time."""

from __future__ import annotations

import time

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from users import cache

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def anon_rate() -> tuple[int, int] | None:
    """(requests, period in seconds), or None when anonymous clients are not limited."""
    rate = getattr(settings, "API_ANON_THROTTLE_RATE", "")
    if not rate:
        return None
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[0]]


class AnonRedisThrottle(BaseThrottle):
    """Fixed-window limit per client address for unauthenticated requests."""

    scope = "anon"

    def __init__(self) -> None:
        self.wait_seconds: float | None = None

    def window(self, request) -> tuple[str, int, int, float] | None:
        """(key, ttl, limit, seconds left) for this request's window, or None if unlimited."""
        rate = anon_rate()
        if rate is None:
            return None
        limit, period = rate
        now = time.time()
        window = int(now // period)
        key = cache.throttle_key(scope=self.scope, ident=self.get_ident(request), window=window)
        return key, period, limit, (window + 1) * period - now

    def allow_request(self, request, view) -> bool:
        if request.user and request.user.is_authenticated:
            return True
        window = self.window(request)
        if window is None:
            return True
        key, ttl, limit, left = window
        count = cache.throttle_hit(key, ttl=ttl)
        if count is None or count <= limit:
            return True
        self.wait_seconds = left
        return False

    def wait(self) -> float | None:
        return self.wait_seconds
