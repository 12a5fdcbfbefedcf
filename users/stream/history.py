"""The resumable event history: one capped Redis stream per channel with consecutive integer ids.

It holds the last STREAM_HISTORY events (at most STREAM_HISTORY_MB of data), so a client
reconnecting with `Last-Event-ID` gets what it missed, from any process, and no stream holds a
database connection. A `user.deleted` event, appended in the same Lua script, records a
tombstone (the user id, scored by the event's id) in a sorted set beside the history; reads
return, with each step of events, the tombstones newer than them (users.stream.redaction takes
those users out). Tombstones go when the history trims past them.
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass, field
from typing import NamedTuple

from django.conf import settings

from users.cache import history_keys
from users.redis import script, stream_client
from users.stream.encoding import Event
from users.stream.redaction import replay_body, without_deleted_users

# A replay reads the history this much at a time.
REPLAY_STEP_EVENTS = 100
REPLAY_STEP_BYTES = 2**20


@dataclass
class HistoryRead:
    """One step of reading the history after an id."""

    current_id: int
    events: list[Event] = field(default_factory=list)
    up_to_date: bool = False
    lost: bool = False  # the id is not (or no longer) in the history
    backlog_events: int = 0  # events after the id, in all (when asked for)
    backlog_bytes: int = 0
    last_read_id: int = 0  # the last event read, kept or not (deleted users are dropped)


class EncodedEvent(NamedTuple):
    """A history event as a replay sends it: its id and its SSE text, deleted users taken out."""

    id: int
    body: bytes


class EventDoesNotExist(Exception):
    """The id asked after is not (or no longer) in the history."""

    def __init__(self, message: str, current_id: int) -> None:
        super().__init__(message)
        self.current_id = current_id


class RedisStreamStorage:
    """Bounded event history in Redis; ids are consecutive integers per channel."""

    def __init__(self) -> None:
        client = stream_client()
        self._append = script(client, "stream_append")
        self._read = script(client, "stream_read")
        self._backlog = script(client, "stream_backlog")

    def append_event(self, channel: str, event_type: str, data: str | bytes) -> Event:
        deleted_id = ""
        if event_type == "user.deleted":
            with suppress(ValueError, KeyError, TypeError):
                deleted_id = str(int(json.loads(data)["id"]))
        event_id = self._append(
            keys=list(history_keys(channel)),
            args=[
                event_type,
                data,
                settings.STREAM_HISTORY,
                settings.STREAM_HISTORY_MB * 2**20,
                deleted_id,
            ],
        )
        return Event(channel, event_type, data, id=int(event_id))

    def backlog(self, channel: str, last_id: int) -> tuple[int, int]:
        """(events, bytes) a resume after `last_id` would replay; (0, 0) when none or when the
        id is not in the history (that resume is a stream-reset)."""
        id_key, log_key, sizes_key, *_ = history_keys(channel)
        events, size = self._backlog(keys=[id_key, log_key, sizes_key], args=[last_id])
        return int(events), int(size)

    def read(
        self, channel: str, last_id: int, *, max_events: int, max_bytes: int,
        backlog: bool = False, encoded: bool = False,
    ) -> HistoryRead:  # fmt: skip
        """Events after `last_id`: at most `max_events`, and `max_bytes` of data (one event at
        least), deleted users taken out; with `encoded`, as EncodedEvents (replay_body)."""
        id_key, log_key, sizes_key, _, deleted_key = history_keys(channel)
        current, status, *rest = self._read(
            keys=[id_key, log_key, sizes_key, deleted_key],
            args=[last_id, max_events, max_bytes, "1" if backlog else "0"],
        )
        if status == 1:
            return HistoryRead(current, up_to_date=True)
        if status in (2, 3):
            return HistoryRead(current, lost=True)
        backlog_events, backlog_bytes, entries, tombstones = rest
        pairs = zip(tombstones[::2], tombstones[1::2], strict=True)
        deleted = {int(user): int(float(at)) for user, at in pairs}
        events: list = []
        last_read_id = int(entries[-1][0].split("-", 1)[0]) if entries else last_id
        while entries:
            entry_id, fields = entries.pop()  # newest first: each entry's text goes as it is used
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            event_id = int(entry_id.split("-", 1)[0])
            if encoded:
                body = replay_body(channel, event_id, values["t"], values["d"], deleted)
                if body is not None:
                    events.append(EncodedEvent(event_id, body))
                continue
            event = Event(channel, values["t"], values["d"], id=event_id)
            event = without_deleted_users(event, deleted) if deleted else event
            if event is not None:
                events.append(event)
        events.reverse()
        return HistoryRead(
            current,
            events,
            backlog_events=backlog_events,
            backlog_bytes=backlog_bytes,
            last_read_id=last_read_id,
        )

    def get_events(self, channel: str, last_id: int, limit: int = 100) -> list[Event]:
        read = self.read(channel, last_id, max_events=limit, max_bytes=2**62)
        if read.lost:
            raise EventDoesNotExist(f"event {last_id} is not in the history", read.current_id)
        return read.events

    def get_current_id(self, channel: str) -> int:
        return int(stream_client().get(history_keys(channel)[0]) or 0)
