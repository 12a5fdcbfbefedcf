"""The API's rate limits (DRF's throttle class and the count of token lookups), on the windows
of users.ratelimit: per account for authenticated clients (settings.API_USER_THROTTLE_RATE), per
client address for anonymous ones (API_ANON_THROTTLE_RATE), counted in the shared Redis so a
limit holds across every web process.

Hand-written rather than DRF's SimpleRateThrottle: that one keeps a list of timestamps per client
in the cache (a read and a write of a growing list per request, racing between processes); a
fixed window is one atomic INCR, which the fast read path (users.api.fast_read) folds into the
same Redis round trip as the user it reads.
"""

from __future__ import annotations

from rest_framework.exceptions import Throttled
from rest_framework.throttling import BaseThrottle

from users import consistency, ratelimit
from users.api.authentication import request_principal
from users.client_address import request_client_address
from users.ratelimit import account_window, anon_window

# The methods of the reads a replica may serve (the list), whose throttle reads the account's
# write position along with its count.
_READS = frozenset({"GET", "HEAD"})


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
        if principal is not None and request.method in _READS and consistency.reads_routed():
            count = self._account_hit(request, window, account_id=principal.account_id)
        else:
            count = ratelimit.throttle_hit(window.key, ttl=window.seconds)
        if count is None or count <= window.limit:
            return True
        self.wait_seconds = window.left
        return False

    @staticmethod
    def _account_hit(request, window: ratelimit.Window, *, account_id: int) -> int | None:
        # A read that may be routed to a replica needs the account's write position: read in
        # the same round trip as the count, and kept for the view (users.consistency).
        hit = ratelimit.account_hit(window, account_id=account_id)
        if hit is None:
            return None
        consistency.request_written_lsn_read(
            request, account_id=account_id, written_lsn=hit.written_lsn
        )
        return hit.count

    def wait(self) -> float | None:
        return self.wait_seconds
