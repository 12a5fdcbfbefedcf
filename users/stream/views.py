"""The stream's views: GET /users/sse (who may stream, its bounds, its refusals) and the live
page GET /users/live that shows it.

Who may stream: the API's read rule (users.access.may "view", through
users.selectors.principal_for_request: an `Authorization: Token` header or a session). A
connect counts as one request of the client's API rate-limit window and the history it resumes
with as one per SSE_REPLAY_BYTES_PER_REQUEST bytes, sized before the stream starts; over the
limit, a JSON 429 with Retry-After. A client has at most SSE_MAX_STREAMS_PER_CLIENT streams open
(users.stream.slots).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse

from users import selectors
from users.access import InvalidCredentials, Principal
from users.cache import streams_key
from users.consistency import read_alias
from users.refusals import (
    STREAM_UNAVAILABLE,
    Refusal,
    error_response,
    invalid_credentials,
    refusal,
    throttled,
    too_many_streams_detail,
)
from users.stream.clients import StreamClient
from users.stream.delivery import Listener
from users.stream.history import RedisStreamStorage
from users.stream.slots import STREAM_LIMIT_RETRY_AFTER, StreamSlot
from users.stream.streaming import client_stream_body
from viswals.db_router import read_with_fallback

logger = logging.getLogger(__name__)

# Last-Event-ID is "<channel>@<epoch>:<n>" (several, comma-separated, in the library's format).
# The format before epochs, "<channel>:<n>", is still taken: as an id of no epoch, which gets
# stream-reset (its numbering may not be today's).
_LAST_ID_PART = re.compile(r"([^:,@]{1,200})(?:@([0-9a-z]{1,32}))?:([0-9]{1,19})")
INVALID_LAST_EVENT_ID = "Invalid Last-Event-ID: expected '<channel>@<epoch>:<event number>'."


def _last_event_id(request: HttpRequest, channel: str) -> tuple[str, int] | None:
    """The client's last event on `channel`: (epoch, id); None: none given, or another
    channel's. Raises ValueError when malformed."""
    value = request.META.get("HTTP_LAST_EVENT_ID")
    if not value:
        value = next((v for v in reversed(request.GET.getlist("lastEventId")) if v), None)
    if not value:
        return None
    found = None
    for part in value.split(","):
        match = _LAST_ID_PART.fullmatch(part.strip())
        if match is None:
            raise ValueError(value)
        if unquote(match[1]) == channel:
            found = (match[2] or "", int(match[3]))
    return found


def _read_refusal(request: HttpRequest) -> tuple[HttpResponse | None, Principal | None]:
    """(401/403 response, None) unless the request may read users; then (None, principal)."""
    try:
        principal = selectors.principal_for_request(request)
    except InvalidCredentials as exc:
        return error_response(invalid_credentials(str(exc))), None
    refused = refusal(principal, "view", authorization=request.headers.get("authorization"))
    if refused is not None:
        return error_response(refused), None
    return None, principal


def users_event_stream(request: HttpRequest) -> HttpResponse:
    """GET /users/sse: the users event stream (resumable with Last-Event-ID)."""
    try:
        return _open_stream(request)
    finally:
        # Reading request.user or a token may have taken a pooled database connection; a
        # stream lives for hours and needs none, so give it back now.
        for connection in connections.all(initialized_only=True):
            connection.close()


def _open_stream(request: HttpRequest) -> HttpResponse:
    refusal, principal = _read_refusal(request)
    if refusal is not None:
        return refusal
    channel = settings.STREAM_CHANNEL
    try:
        last_id = _last_event_id(request, channel)
    except ValueError:
        # The API's one 400 shape: the offending parameter with its messages.
        return JsonResponse({"Last-Event-ID": [INVALID_LAST_EVENT_ID]}, status=400)
    client = StreamClient.of_request(request, principal)
    over_limit = _replay_refusal(client, channel, last_id)
    if over_limit is not None:
        return over_limit
    address = client.address
    slot = StreamSlot(
        streams_key(account_id=principal.account_id if principal else None, address=address)
    )
    try:
        taken = slot.take()
    except Exception as exc:
        logger.warning("sse: Redis unavailable (%s); refusing a stream", exc)
        return error_response(Refusal(503, STREAM_UNAVAILABLE, {"Retry-After": "5"}))
    if not taken:
        limit = settings.SSE_MAX_STREAMS_PER_CLIENT
        logger.info("sse: %s has %d streams open; refused another (429)",
                    f"account {principal.account_id}" if principal else address, limit)  # fmt: skip
        retry = {"Retry-After": str(STREAM_LIMIT_RETRY_AFTER)}
        return error_response(Refusal(429, too_many_streams_detail(limit), retry))
    listener = Listener()
    listener.user_id = principal.account_id if principal else "anonymous"
    listener.channels = {channel}
    response = StreamingHttpResponse(
        client_stream_body(
            channel=channel, last_id=last_id, listener=listener, slot=slot, client=client
        ),
        content_type="text/event-stream",
    )
    response._resource_closers.append(slot.release)  # also when the stream never started
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


def _replay_refusal(
    client: StreamClient, channel: str, last_id: tuple[str, int] | None
) -> HttpResponse | None:
    """A 429 (the API's, with Retry-After) when the client is over its rate limit, once this
    connect and the history it resumes with are counted: a connect is one request, a replay one
    per SSE_REPLAY_BYTES_PER_REQUEST bytes (a replay beyond the replay bounds is a stream-reset,
    charged as the connect alone). None: go ahead (also when Redis cannot tell)."""
    replayed = 0
    if last_id is not None:
        try:
            epoch, after = last_id
            events, size = RedisStreamStorage().backlog(channel, after, epoch)
        except Exception as exc:  # the stream itself will find out and end
            logger.warning("sse: could not size a replay (%s)", exc)
            events = size = 0
        if events <= settings.SSE_REPLAY_MAX_EVENTS and size <= settings.SSE_REPLAY_MAX_BYTES:
            replayed = size
    charged = client.charge(replayed=replayed, connect=True)
    if charged is None or charged[0] <= charged[1].limit:
        return None
    who = f"account {client.principal.account_id}" if client.principal else client.address
    logger.info("sse: %s is over its rate limit; refused a stream (429)", who)
    return error_response(throttled(charged[1].left))


def users_live(request: HttpRequest) -> HttpResponse:
    """GET /users/live: a page listing users as they arrive, change and go, opening with the
    newest users. Anonymous visitors are sent to log in (admin login page) unless reads are
    public; accounts without users.view_user are refused."""
    try:
        principal = selectors.principal_for_request(request)
    except InvalidCredentials:
        principal = None
    refused = refusal(principal, "view")
    if refused is not None:
        if refused.status == 401:
            return redirect_to_login(request.get_full_path(), login_url=reverse("admin:login"))
        raise PermissionDenied
    newest = read_with_fallback(
        lambda database: selectors.user_list_newest(limit=LIVE_PAGE_ROWS, using=database),
        read_alias(account_id=principal.account_id if principal else None),
    )
    return render(
        request,
        "users/live.html",
        {"stream_url": reverse("users-sse"), "keep": LIVE_PAGE_ROWS, "newest": newest},
    )


# Rows the live page keeps on screen; older ones are dropped (an import brings thousands).
LIVE_PAGE_ROWS = 50
