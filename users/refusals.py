"""Every refusal the users paths answer with: its words, its JSON body, and the one decision
"may this client do that?" turned into what the client is told.

The rule itself is users.access.may. `refusal(principal, action)` turns its answer into a
status, a detail and headers, the same for every path that asks: DRF's permission
(users.api.permissions), the fast read ahead of Django (users.api.fast_read), the stream's
connect and its re-checks (users.stream.views, users.stream.clients) and the live page. Bodies
are `{"detail": "..."}` everywhere, and a map of lists for a 400: their shape is
users.error_bodies (which the wiring's request limits use too, with the words of their own
refusals); `error_body` and `error_response` write them.
"""

from __future__ import annotations

from typing import NamedTuple

from django.http import HttpResponse

from users.access import Principal, may
from users.error_bodies import body_too_large_detail as body_too_large_detail  # also Django's
from users.error_bodies import error_data
from users.payloads import to_json

# --- The words -------------------------------------------------------------------------------

NOT_AUTHENTICATED = "Authentication credentials were not provided."  # DRF's words
INVALID_TOKEN = "Invalid, expired or revoked token."
MALFORMED_AUTHORIZATION = "Malformed Authorization header: expected 'Token <token>'."
PERMISSION_DENIED = "You do not have permission to perform this action."  # DRF's words
NOT_FOUND = "Not found."
SERVER_ERROR = "Internal server error."
STREAM_UNAVAILABLE = "The event stream is unavailable; retry shortly."
QUERY_TIMEOUT = "The query took too long and was cancelled; narrow it with more selective filters."
# What Django refuses of a request's data (users.api.exceptions), and its own error pages'
# statuses turned into JSON under /users.
MALFORMED_MULTIPART = "Malformed multipart body."
BAD_REQUEST = "Bad request."
FORBIDDEN = "Permission denied."  # Django's words
# Why a stream was ended by stream-closed ({"reason": ..., "detail": ...}).
CLOSED_NOT_AUTHENTICATED = (
    "not_authenticated",
    "The stream's credentials are no longer valid: token revoked or expired, session ended, "
    "or account deactivated.",
)
CLOSED_PERMISSION_DENIED = ("permission_denied", PERMISSION_DENIED)
CLOSED_UNAVAILABLE = ("unavailable", "The stream's credentials could not be checked; reconnect.")

# Sent with every 401: the scheme a client should use.
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Token realm="api"'}


def throttled_detail(wait: int) -> str:
    return f"Request was throttled. Expected available in {wait} seconds."  # DRF's words


def too_many_fields_detail(limit: int) -> str:
    return f"Too many query or form parameters: at most {limit}."


def too_many_files_detail(limit: int) -> str:
    return f"Too many files: at most {limit}."


def csrf_failed_detail(reason: str) -> str:
    return f"CSRF Failed: {reason}"  # DRF's words (SessionAuthentication)


def too_many_streams_detail(limit: int) -> str:
    return f"Too many open streams: at most {limit} per client."


def not_authenticated_detail(authorization: str | bytes | None) -> str:
    """The 401 message for a client without usable credentials: DRF's, unless it sent an
    Authorization header of a scheme nothing here reads (`Bearer`, as OAuth clients send):
    then the scheme to use instead, rather than "not provided" for a header it did send."""
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme = (authorization or "").strip().partition(" ")[0]
    if not scheme or scheme.lower() == "token":
        return NOT_AUTHENTICATED
    return (
        f"Authorization scheme '{scheme[:32]}' is not accepted here: "
        "send 'Authorization: Token <token>'."
    )


# --- The decision ----------------------------------------------------------------------------


class Refusal(NamedTuple):
    status: int
    detail: str
    headers: dict[str, str]


def refusal(
    principal: Principal | None, action: str, *, authorization: str | bytes | None = None
) -> Refusal | None:
    """None when this client (None: anonymous) may `action` users; else what it is told: 401
    when its token expired (also in public-read mode: expired credentials are refused, not taken
    as anonymous) or it is not known (with `authorization`, the header it sent, to say why);
    403 when its account lacks the permission."""
    if principal is not None and principal.expired():
        return Refusal(401, INVALID_TOKEN, WWW_AUTHENTICATE)
    if may(principal, action):
        return None
    if principal is None:
        return Refusal(401, not_authenticated_detail(authorization), WWW_AUTHENTICATE)
    return Refusal(403, PERMISSION_DENIED, {})


def invalid_credentials(detail: str = INVALID_TOKEN) -> Refusal:
    """401 for credentials of our scheme that are no good (malformed, unknown, revoked)."""
    return Refusal(401, detail, WWW_AUTHENTICATE)


def retry_after(left: float) -> int:
    """Whole seconds to wait, at least 1, for a window that reopens in `left` seconds."""
    return max(int(left) + 1, 1)


def throttled(left: float) -> Refusal:
    """429 for a client over its rate limit, its window reopening in `left` seconds."""
    wait = retry_after(left)
    return Refusal(429, throttled_detail(wait), {"Retry-After": str(wait)})


# --- The body --------------------------------------------------------------------------------


def error_body(detail: str, **extra) -> bytes:
    """The JSON error body: `{"detail": ...}` (and any `extra` members)."""
    return to_json(error_data(detail, **extra)).encode()


def error_response(answer: Refusal, **extra) -> HttpResponse:
    """A Django response for a refusal (paths outside DRF)."""
    response = HttpResponse(
        error_body(answer.detail, **extra), status=answer.status, content_type="application/json"
    )
    for name, value in answer.headers.items():
        response[name] = value
    return response
