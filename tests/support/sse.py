"""The SSE test client: reads a real `text/event-stream` response over HTTP in a thread, parses
its events as a browser's EventSource does, and lets a test wait for the one it expects."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import httpx


@dataclass
class SSEEvent:
    type: str
    id: str | None
    data: str

    def json(self):
        return json.loads(self.data)


class SSEClient:
    """Reads an event stream in a thread; events land in a queue."""

    def __init__(
        self, url: str, last_event_id: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.events: queue.Queue[SSEEvent] = queue.Queue()
        headers = {"Accept": "text/event-stream", **(headers or {})}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self._response = self._client.send(
            self._client.build_request("GET", url, headers=headers), stream=True
        )
        assert self._response.status_code == 200
        assert self._response.headers["content-type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.wait_for(lambda event: event.type == "stream-open")

    def _read(self) -> None:
        fields: dict[str, list[str]] = {}
        try:
            for line in self._response.iter_lines():
                if line == "":
                    if "event" in fields or "data" in fields:
                        self.events.put(
                            SSEEvent(
                                type=fields.get("event", ["message"])[-1],
                                id=fields.get("id", [None])[-1],
                                data="\n".join(fields.get("data", [])),
                            )
                        )
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields.setdefault(name, []).append(value.removeprefix(" "))
        except Exception:
            pass  # closed

    def wait_for(self, match: Callable[[SSEEvent], bool], timeout: float = 10) -> SSEEvent:
        """The first event (from now) that `match` accepts; events before it are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"expected event did not arrive (waited {timeout:g} s)"
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if match(event):
                return event

    def received(self, within: float = 0.5) -> list[SSEEvent]:
        """Every event that arrives within `within` seconds."""
        out = []
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                out.append(self.events.get(timeout=remaining))
            except queue.Empty:
                break
        return out

    def ended(self, timeout: float = 5) -> bool:
        """Whether the server ended the stream within `timeout` seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        # Closing the response does not close a socket another thread is reading: shut it down.
        sock = self._response.extensions["network_stream"].get_extra_info("socket")
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        self._response.close()
        self._client.close()


def stalled_stream(port: int, token: str, last_event_id: str) -> socket.socket:
    """A stream that asks for a replay and never reads (a small receive window, too): the
    stalled client of the stream's limits (tests/users/test_sse.py, bench_stalled_streams.py)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /users/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        f"Authorization: Token {token}\r\nLast-Event-ID: {last_event_id}\r\n\r\n".encode()
    )
    return sock


def bytes_until_closed(sock: socket.socket, limit: int, timeout: float) -> int | None:
    """Read until the server closes (returns the bytes read), or None if it has not closed
    within `timeout` seconds or `limit` bytes."""
    sock.settimeout(timeout)
    total = 0
    try:
        while total <= limit:
            chunk = sock.recv(65536)
            if not chunk:
                return total
            total += len(chunk)
    except ConnectionResetError:
        return total
    except TimeoutError:
        return None
    return None
