"""Rate limit for anonymous clients, counted in the shared Redis (users.cache) so the limit holds
across every web process. Rate: settings.API_ANON_THROTTLE_RATE ("<n>/<second|minute|hour|day>",
or empty for none), read at call time."""

from __future__ import annotations

import time

from django.conf import settings
from rest_framework.settings import api_settings
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


def client_ident(*, forwarded_for: str | None, remote_addr: str | None) -> str:
    """The client address a limit applies to, as DRF's throttles identify it (NUM_PROXIES)."""
    num_proxies = api_settings.NUM_PROXIES
    if num_proxies is not None:
        if num_proxies == 0 or forwarded_for is None:
            return remote_addr or ""
        addrs = forwarded_for.split(",")
        return addrs[-min(num_proxies, len(addrs))].strip()
    return "".join(forwarded_for.split()) if forwarded_for else (remote_addr or "")


def anon_window(ident: str) -> tuple[str, int, int, float] | None:
    """(key, ttl, limit, seconds left) of the current window for a client, None if unlimited."""
    rate = anon_rate()
    if rate is None:
        return None
    limit, period = rate
    now = time.time()
    window = int(now // period)
    key = cache.throttle_key(scope="anon", ident=ident, window=window)
    return key, period, limit, (window + 1) * period - now


class AnonRedisThrottle(BaseThrottle):
    """Fixed-window limit per client address for unauthenticated requests."""

    def __init__(self) -> None:
        self.wait_seconds: float | None = None

    def get_ident(self, request) -> str:
        return client_ident(
            forwarded_for=request.headers.get("x-forwarded-for"),
            remote_addr=request.META.get("REMOTE_ADDR"),
        )

    def allow_request(self, request, view) -> bool:
        if request.user and request.user.is_authenticated:
            return True
        window = anon_window(self.get_ident(request))
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
