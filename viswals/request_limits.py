"""Request size limits, ahead of Django (ASGI): a body larger than settings.API_MAX_BODY_BYTES is
answered 413 as soon as `Content-Length` says so, before any of it is read, and a chunked body
as soon as it passes the limit; request heads over REQUEST_MAX_HEADER_BYTES get 431 (uvicorn
refuses them earlier still, viswals/http_protocol.py). Django's handler would otherwise read any
body whole — to disk past 2.5 MB — before a view could refuse it.

Bodies under /admin/ may be ADMIN_MAX_BODY_BYTES; the admin's CSV import takes files up to
ADMIN_IMPORT_MAX_BYTES (ingest/uploads.py checks the file itself as it arrives).
"""

from __future__ import annotations

import json
import logging

from django.conf import settings

from ingest.uploads import MULTIPART_SLACK

logger = logging.getLogger(__name__)

# The admin's "Import users" page (ingest.admin.IngestRunAdmin.import_view).
IMPORT_PATH = "/admin/ingest/ingestrun/import/"


def _body_limit(path: str) -> int:
    if path == IMPORT_PATH:
        return settings.ADMIN_IMPORT_MAX_BYTES + MULTIPART_SLACK
    if path.startswith("/admin/"):
        return max(settings.ADMIN_MAX_BODY_BYTES, settings.API_MAX_BODY_BYTES)
    return settings.API_MAX_BODY_BYTES


def _refusal(status: int, detail: str) -> tuple[dict, dict]:
    # The API's error shapes (users.api.exceptions): a 400 is a map of lists.
    error = {"non_field_errors": [detail]} if status == 400 else {"detail": detail}
    body = json.dumps(error).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


async def _refuse(send, status: int, detail: str) -> None:
    logger.info("refused a request: %s (%d)", detail, status)
    start, body = _refusal(status, detail)
    await send(start)
    await send(body)


def request_limits(app):
    """Wrap an ASGI application with the size limits above."""

    async def application(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        head = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > settings.REQUEST_MAX_HEADER_BYTES:
            return await _refuse(
                send, 431, f"Request headers too large: at most "
                f"{settings.REQUEST_MAX_HEADER_BYTES} bytes in all."
            )  # fmt: skip
        limit = _body_limit(scope["path"])
        too_large = f"Request body too large: at most {limit} bytes."
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    return await _refuse(send, 400, "Content-Length is not a number.")
                length = int(value)
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

    return application
