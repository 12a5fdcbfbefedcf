"""Request size limits, ahead of Django (ASGI): a body larger than settings.API_MAX_BODY_BYTES is
answered 413 as soon as `Content-Length` says so, before any of it is read, and a chunked body
as soon as it passes the limit; request heads over REQUEST_MAX_HEADER_BYTES get 431 (uvicorn
refuses them earlier still, viswals/http_protocol.py). Django's handler would otherwise read any
body whole — to disk past 2.5 MB — before a view could refuse it.

Bodies under /admin/ may be ADMIN_MAX_BODY_BYTES. The admin's CSV import takes files up to
ADMIN_IMPORT_MAX_BYTES (ingest/uploads.py checks the file itself as it arrives), but only from
a client whose session cookie is that of an account allowed to import, resolved before any of
the body is read: anyone else has the admin's limit there too. Django's handler spools a body
to disk before the view (and its login redirect) runs, so five anonymous clients used to hold
half a gigabyte of temporary files. And each process receives at most
ADMIN_IMPORT_MAX_UPLOADS such large bodies at once; one more gets 503 with Retry-After.
"""

from __future__ import annotations

import json
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.http.cookie import parse_cookie
from django.utils.module_loading import import_string

from users.error_bodies import (
    CONTENT_LENGTH_NOT_A_NUMBER,
    body_too_large_detail,
    error_data,
    head_too_large_detail,
    imports_busy_detail,
)

logger = logging.getLogger(__name__)

# The admin's "Import users" page (ingest.admin.IngestRunAdmin.import_view).
IMPORT_PATH = "/admin/ingest/ingestrun/import/"
# Seconds a client refused for want of a large-body slot is told to wait.
LARGE_BODY_RETRY_AFTER = 10


def _body_limit(path: str) -> int:
    if path.startswith("/admin/"):
        return max(settings.ADMIN_MAX_BODY_BYTES, settings.API_MAX_BODY_BYTES)
    return settings.API_MAX_BODY_BYTES


def _refusal(status: int, detail: str, headers=()) -> tuple[dict, dict]:
    # The API's error shapes: a 400 is a map of lists.
    body = json.dumps(error_data(detail, status=status)).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *headers,
        ],
    }
    return start, {"type": "http.response.body", "body": body}


async def _refuse(send, status: int, detail: str, headers=()) -> None:
    logger.info("refused a request: %s (%d)", detail, status)
    start, body = _refusal(status, detail, headers)
    await send(start)
    await send(body)


# --- Large bodies: the admin's CSV import ---------------------------------------------------


def _session_key(scope) -> str | None:
    name = settings.SESSION_COOKIE_NAME
    for header, value in scope["headers"]:
        if header == b"cookie":
            key = parse_cookie(value.decode("latin-1")).get(name)
            if key:
                return key
    return None


def _checked_session(session_key: str) -> bool:
    # Outside Django's request cycle nobody else closes this thread's connection (or hands it
    # back to the pool). Rare enough (large uploads only) to close it outright.
    try:
        return import_string(settings.ADMIN_IMPORT_SESSION_CHECK)(session_key)
    finally:
        connections.close_all()


async def _may_send_an_import(scope) -> bool:
    """Whether this request's session may import (one session and account lookup; only asked
    of requests whose body may be over the admin's usual limit)."""
    session_key = _session_key(scope)
    if session_key is None:
        return False
    try:
        return await sync_to_async(_checked_session)(session_key)
    except Exception:
        logger.exception("could not check the session of an import upload; refused")
        return False


class _LargeBodySlots:
    """How many large bodies this process receives at once (one event loop: no lock needed)."""

    def __init__(self) -> None:
        self.taken = 0

    def take(self) -> bool:
        if self.taken >= settings.ADMIN_IMPORT_MAX_UPLOADS:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken -= 1


_large_bodies = _LargeBodySlots()


async def _receive_import(app, scope, receive, send, length: int | None):
    """The import page, for a body that may be over the admin's limit: only a session allowed
    to import sends up to ADMIN_IMPORT_MAX_BYTES, in one of ADMIN_IMPORT_MAX_UPLOADS slots."""
    if not await _may_send_an_import(scope):
        return await _limited(app, scope, receive, send, _body_limit(scope["path"]), length)
    if not _large_bodies.take():
        return await _refuse(
            send,
            503,
            imports_busy_detail(LARGE_BODY_RETRY_AFTER),
            [(b"retry-after", str(LARGE_BODY_RETRY_AFTER).encode())],
        )
    try:
        limit = settings.ADMIN_IMPORT_MAX_BYTES + settings.ADMIN_IMPORT_MULTIPART_SLACK
        return await _limited(app, scope, receive, send, limit, length)
    finally:
        _large_bodies.give_back()


def request_limits(app):
    """Wrap an ASGI application with the size limits above."""

    async def application(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        head = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > settings.REQUEST_MAX_HEADER_BYTES:
            too_large = head_too_large_detail(settings.REQUEST_MAX_HEADER_BYTES)
            return await _refuse(send, 431, too_large)
        limit = _body_limit(scope["path"])
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    return await _refuse(send, 400, CONTENT_LENGTH_NOT_A_NUMBER)
                length = int(value)
        if scope["path"] == IMPORT_PATH and (length is None or length > limit):
            return await _receive_import(app, scope, receive, send, length)
        return await _limited(app, scope, receive, send, limit, length)

    return application


async def _limited(app, scope, receive, send, limit: int, length: int | None):
    """Run the application with a body of at most `limit` bytes: 413 at once when Content-Length
    says more, or as soon as a chunked body passes it."""
    too_large = body_too_large_detail(limit)
    if length is not None:
        if length > limit:
            return await _refuse(send, 413, too_large)
        return await app(scope, receive, send)

    # No length given (chunked): count as it arrives; past the limit, answer 413 and tell
    # the application the client went away, so it stops reading and sends nothing.
    received = 0
    refused = False

    async def limited_receive():
        nonlocal received, refused
        if refused:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                refused = True
                await _refuse(send, 413, too_large)
                return {"type": "http.disconnect"}
        return message

    async def guarded_send(message):
        if not refused:
            await send(message)

    return await app(scope, limited_receive, guarded_send)
