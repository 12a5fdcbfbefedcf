"""The stalled-client ASGI wrapper: a stream whose client stopped reading is aborted."""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from users.stream.extensions import ABORT_EXTENSION, ENDLESS_EXTENSION

logger = logging.getLogger(__name__)

STREAM_PATH = "/users/sse"


def stalled_streams_closed(app):
    """ASGI wrapper: a write to a /users/sse client that waits longer than SSE_SEND_TIMEOUT
    seconds (the client stopped reading; the server's buffer for it is full) aborts the
    connection, so a stalled client holds one pending write, never a growing buffer. Other
    paths pass untouched."""

    async def application(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != STREAM_PATH:
            return await app(scope, receive, send)
        abort = scope.get("extensions", {}).get(ABORT_EXTENSION)
        endless = scope.get("extensions", {}).get(ENDLESS_EXTENSION)
        if endless is not None:
            endless()  # a graceful shutdown closes the stream at once (viswals.http_protocol)
        timeout = settings.SSE_SEND_TIMEOUT
        stalled = False

        async def send_or_abort(message) -> None:
            nonlocal stalled
            if stalled:
                return
            try:
                async with asyncio.timeout(timeout):
                    await send(message)
            except TimeoutError:
                stalled = True
                logger.info("sse: closing a stream whose client read nothing for %ss", timeout)
                if abort is None:
                    raise  # a server without the extension closes the connection on an error
                abort()  # the server sees a disconnect; Django ends the stream

        return await app(scope, receive, send_or_abort)

    return application
