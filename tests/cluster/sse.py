"""A Server-Sent Events reader for the cluster tests: follows one stream in a thread, its events
in a queue, and reconnects with Last-Event-ID when the stream drops (as a browser's EventSource
does)."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass

import httpx


@dataclass
class StreamEvent:
    type: str
    id: str | None
    data: str
    at: float  # time.monotonic() when it arrived

    def json(self):
        return json.loads(self.data)


class FollowingStream:
    """GET `url` as an event stream; on a dropped connection, again after `retry` seconds with
    the last id seen. `events` gets every event; `drops` each (time, error) of a lost stream."""

    def __init__(self, url: str, headers: dict[str, str], *, retry: float = 0.2) -> None:
        self.url, self.headers, self.retry = url, headers, retry
        self.events: queue.Queue[StreamEvent] = queue.Queue()
        self.last_id: str | None = None
        self.drops: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=30))
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            headers = {"Accept": "text/event-stream", **self.headers}
            if self.last_id:
                headers["Last-Event-ID"] = self.last_id
            try:
                with self._client.stream("GET", self.url, headers=headers) as response:
                    if response.status_code != 200:
                        raise RuntimeError(f"status {response.status_code}")
                    self._read(response)
                raise RuntimeError("stream ended")
            except Exception as error:
                if self._stop.is_set():
                    return
                self.drops.append((time.monotonic(), f"{type(error).__name__}: {error}"))
                time.sleep(self.retry)

    def _read(self, response: httpx.Response) -> None:
        fields: dict[str, list[str]] = {}
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            if line == "":
                if "event" in fields or "data" in fields:
                    event = StreamEvent(
                        type=fields.get("event", ["message"])[-1],
                        id=fields.get("id", [None])[-1],
                        data="\n".join(fields.get("data", [])),
                        at=time.monotonic(),
                    )
                    if event.id:
                        self.last_id = event.id
                    self.events.put(event)
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))

    def wait_for(self, match, timeout: float = 15) -> StreamEvent:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                break
            if match(event):
                return event
        raise AssertionError("expected event did not arrive")

    def close(self) -> None:
        self._stop.set()
        self._client.close()
