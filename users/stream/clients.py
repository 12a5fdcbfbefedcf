"""Who a stream serves, checked again while it runs and charged for what it replays.

A stream keeps what its client authenticated with (the token's digest, or the session key) and
checks it again every API_TOKEN_CACHE_SECONDS (as long as an API request may rely on a cached
token) and at once when a notice names its account (users.events.principals_changed, followed by
users.stream.delivery). A client that may no longer read is sent `stream-closed` and the stream
ends; so does one that cannot be checked (PostgreSQL down: default deny). Replays are charged to
the client's API rate-limit window (users.ratelimit).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.http import HttpRequest

from users import ratelimit, selectors
from users.access import Principal, token_digest, token_from_authorization
from users.client_address import request_client_address
from users.refusals import (
    CLOSED_NOT_AUTHENTICATED,
    CLOSED_PERMISSION_DENIED,
    CLOSED_UNAVAILABLE,
    refusal,
)

logger = logging.getLogger(__name__)


@dataclass
class StreamClient:
    """Who opened a stream and with what (a token, known by its digest; a session), so that it
    can be checked again while it streams, and charged for what it replays."""

    principal: Principal | None
    address: str
    token_digest: str | None = None
    session_key: str | None = None
    checked: float = field(default_factory=time.monotonic)

    @classmethod
    def of_request(cls, request: HttpRequest, principal: Principal | None) -> StreamClient:
        """The credentials principal_for_request took the principal from: the token of an
        `Authorization: Token` header, else the session."""
        client = cls(principal, request_client_address(request))
        token = token_from_authorization(request.META.get("HTTP_AUTHORIZATION"))
        if token:
            client.token_digest = token_digest(token)
        elif principal is not None:
            client.session_key = request.session.session_key
        return client

    # -- Checked again ----------------------------------------------------------------------

    def check_in(self) -> float:
        """Seconds until the next periodic check: every API_TOKEN_CACHE_SECONDS, as long as a
        token's permissions may be kept in Redis, so a stream never outlives its client's
        rights by longer than an API request would."""
        return self.checked + max(settings.API_TOKEN_CACHE_SECONDS, 1) - time.monotonic()

    async def refusal(self) -> tuple[str, str] | None:
        """Check the client again (in a thread: it may need PostgreSQL); why it may no longer
        read, or None."""
        self.checked = time.monotonic()
        if self.token_digest is None and self.session_key is None:
            return None  # anonymous, in public-read mode: a setting, fixed for the process
        reason = await sync_to_async(self._refusal, thread_sensitive=False)()
        if reason is not None:
            who = f"account {self.principal.account_id}" if self.principal else self.address
            logger.info("sse: closing a stream of %s (%s)", who, reason[0])
        return reason

    def _refusal(self) -> tuple[str, str] | None:
        try:
            if self.token_digest is not None:
                principal = selectors.principal_for_digest(digest=self.token_digest)
            else:
                principal = selectors.principal_for_session(session_key=self.session_key)
        except Exception as exc:  # default deny: the client reconnects and is checked anew
            logger.warning("sse: could not check a stream's client again (%s)", exc)
            return CLOSED_UNAVAILABLE
        finally:
            for connection in connections.all(initialized_only=True):
                connection.close()  # this thread serves other streams: hold no connection
        refused = refusal(principal, "view")
        if refused is None:
            return None
        return CLOSED_NOT_AUTHENTICATED if refused.status == 401 else CLOSED_PERMISSION_DENIED

    # -- Charged for replays ----------------------------------------------------------------

    def window(self) -> ratelimit.Window | None:
        """The client's rate-limit window, the API's: per account, else per client address."""
        if self.principal is not None:
            return ratelimit.account_window(self.principal.account_id)
        return ratelimit.anon_window(self.address)

    def charge(
        self, *, replayed: int, connect: bool = False
    ) -> tuple[int, ratelimit.Window] | None:
        """Count a connect (one request) and `replayed` bytes of history (one request per
        SSE_REPLAY_BYTES_PER_REQUEST) in the client's window; (count so far, window), or None
        when there is no limit or Redis is unavailable."""
        window = self.window()
        amount = int(connect) + -(-replayed // max(settings.SSE_REPLAY_BYTES_PER_REQUEST, 1))
        if window is None or amount == 0:
            return None
        count = ratelimit.throttle_charge(window.key, ttl=window.seconds, amount=amount)
        return None if count is None else (count, window)
