"""uvicorn's httptools protocol with a bound on the request head.

httptools reads request headers without any limit (a 30 MB header was accepted and kept in
memory), and uvicorn's own option (--h11-max-incomplete-event-size) exists only for h11, which
is slower. This subclass counts the bytes of each request head as they arrive and answers 431
once they pass REQUEST_MAX_HEADER_BYTES (16 KiB), before the head is complete or handed on.
Served with `uvicorn --http viswals.http_protocol:HeadLimitedHttpToolsProtocol` (Procfile,
Dockerfile); tests/ops/test_request_limits.py fails if a new uvicorn changes what we rely on.
"""

from __future__ import annotations

import json
import logging
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from viswals.logging import RequestWithoutQuery

# uvicorn's access log (off in scripts/web.sh) writes through a handler of uvicorn's own, which
# our settings do not touch: keep the query out of it on the logger itself.
logging.getLogger("uvicorn.access").addFilter(RequestWithoutQuery())

MAX_HEAD_BYTES = int(os.environ.get("REQUEST_MAX_HEADER_BYTES", 16 * 1024))
# An ASGI scope extension: a callable that drops the connection at once, buffered output and
# all (users.sse closes streams of clients that stopped reading with it; ASGI has no message for
# that, and closing politely would wait for the buffer to drain, i.e. forever).
ABORT_EXTENSION = "viswals.abort"


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_too_large = False

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # Count up to the blank line that ends the head: a body may share this read.
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            # on_headers_complete checks the head exactly; this catches one that never ends.
            if self._head_bytes > MAX_HEAD_BYTES + 8192:
                self._refuse_head()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEAD_BYTES:
            # Raising stops the parser; uvicorn then answers through send_400_response.
            self._head_too_large = True
            raise ValueError("request head too large")
        self.scope["extensions"] = {
            **self.scope.get("extensions", {}),
            ABORT_EXTENSION: self.transport.abort,
        }
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        body = json.dumps(
            {"detail": f"Request headers too large: at most {MAX_HEAD_BYTES} bytes in all."}
        ).encode()
        self.logger.info("refused a request head over %d bytes (431)", MAX_HEAD_BYTES)
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()
