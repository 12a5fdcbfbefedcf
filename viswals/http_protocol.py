"""uvicorn's httptools protocol with bounds on the request head and on a slow client.

- Head size. httptools reads request headers without any limit (a 30 MB header was accepted and
  kept in memory), and uvicorn's own option (--h11-max-incomplete-event-size) exists only for
  h11, which is slower. This subclass counts the bytes of each request head as they arrive and
  answers 431 once they pass REQUEST_MAX_HEADER_BYTES (16 KiB), before the head is complete or
  handed on.
- Head time. uvicorn waits for a request head as long as the client likes: 400 sockets sending
  a byte every 15 s all stayed open, and with fewer file descriptors they locked out /healthz.
  A connection gets settings.REQUEST_HEAD_TIMEOUT seconds (10) from its opening, and each later
  request on it as much from its first byte, to send a complete head; then 408 and close.
- Body time. While a request body is being received, settings.REQUEST_BODY_IDLE_TIMEOUT
  seconds (30) without a byte from the client end it: 408 and close (the application's next
  read says the client went away). Time the application itself takes does not count: the
  clock stops while uvicorn has stopped reading for it (flow control) or while the client waits
  for `100 Continue`.

uvicorn's --limit-concurrency (scripts/web.sh, WEB_LIMIT_CONCURRENCY) bounds the connections
each worker process holds; see the docs' deployment page for what a proxy in front adds.
Served with `uvicorn --http viswals.http_protocol:HeadLimitedHttpToolsProtocol` (Procfile,
Dockerfile); tests/ops/test_request_limits.py fails if a new uvicorn changes what we rely on.
"""

from __future__ import annotations

import json
import logging
import os
from asyncio import TimerHandle

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from users.error_bodies import (
    body_stalled_detail,
    error_data,
    head_timeout_detail,
    head_too_large_detail,
)
from users.stream.extensions import ABORT_EXTENSION, ENDLESS_EXTENSION
from viswals.logging import RequestWithoutQuery

# The uvicorn this subclass was written against (its internals: see the methods overridden);
# tests/ops/test_request_limits.py fails when requirements.txt pins another.
WRITTEN_FOR_UVICORN = "0.54.0"
MAX_HEAD_BYTES = int(os.environ.get("REQUEST_MAX_HEADER_BYTES", 16 * 1024))

# uvicorn's access log (off in scripts/web.sh) writes through a handler of uvicorn's own, which
# our settings do not touch: keep the query out of it on the logger itself.
logging.getLogger("uvicorn.access").addFilter(RequestWithoutQuery())


def _timeouts() -> tuple[float, float]:
    """(head, body idle) seconds from the settings; read when a connection is made, by which
    time uvicorn has loaded the application and with it Django's settings."""
    from django.conf import settings

    return float(settings.REQUEST_HEAD_TIMEOUT), float(settings.REQUEST_BODY_IDLE_TIMEOUT)


def _expects_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_too_large = False
        self._endless = False
        self._head_timeout, self._body_idle_timeout = _timeouts()
        # One timer at a time: the head's, or the body's while a body is being received.
        self._read_timer: TimerHandle | None = None

    # --- timers ---------------------------------------------------------------------------------

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        if seconds > 0:
            self._read_timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _head_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a request still being answered: we are the slow ones.
            self._arm(self._head_timeout, self._head_timed_out)
            return
        level = logging.INFO if self._head_bytes else logging.DEBUG
        self.logger.log(level, "closed a connection without a request head in %gs (408)",
                        self._head_timeout)  # fmt: skip
        self._answer_and_close(408, head_timeout_detail(self._head_timeout))

    def _body_timed_out(self) -> None:
        self._read_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or not cycle.more_body:
            return
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # The application has not read what it has (or not asked for the body yet).
            self._arm(self._body_idle_timeout, self._body_timed_out)
            return
        self.logger.info("closed a connection whose request body stalled for %gs (408)",
                         self._body_idle_timeout)  # fmt: skip
        if not cycle.response_started:
            self._answer_and_close(408, body_stalled_detail(self._body_idle_timeout))
        else:
            self.transport.close()
        # The application's next receive() gets http.disconnect; what it sends is dropped.
        cycle.disconnected = True
        cycle.message_event.set()

    # --- uvicorn's protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm(self._head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        super().handle_websocket_upgrade()

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
        self._endless = False
        if self._read_timer is None:  # a later request on the connection: from its first byte
            self._arm(self._head_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEAD_BYTES:
            # Raising stops the parser; uvicorn then answers through send_400_response.
            self._head_too_large = True
            raise ValueError("request head too large")
        self.scope["extensions"] = {
            **self.scope.get("extensions", {}),
            ABORT_EXTENSION: self.transport.abort,
            ENDLESS_EXTENSION: self._response_is_endless,
        }
        super().on_headers_complete()
        if _expects_body(self.headers):
            self._arm(self._body_idle_timeout, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self._read_timer is not None:
            self._arm(self._body_idle_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._in_head = True

    def _response_is_endless(self) -> None:
        self._endless = True

    def shutdown(self) -> None:
        """Graceful shutdown: an endless response still going is closed now (see
        ENDLESS_EXTENSION); anything else is left to finish, as uvicorn does."""
        if self._endless and self.cycle is not None and not self.cycle.response_complete:
            self.logger.debug("closing an open event stream for the shutdown")
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # a client not reading: it resumes from its last event
            else:
                self.transport.close()
            return
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        self.logger.info("refused a request head over %d bytes (431)", MAX_HEAD_BYTES)
        self._answer_and_close(431, head_too_large_detail(MAX_HEAD_BYTES))

    def _answer_and_close(self, status: int, detail: str) -> None:
        self._disarm()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        body = json.dumps(error_data(detail)).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()
