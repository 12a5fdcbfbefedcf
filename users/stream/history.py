"""The resumable event history: one capped Redis stream per channel with consecutive integer ids.

It holds the last STREAM_HISTORY events (at most STREAM_HISTORY_MB of data), so a client
reconnecting with `Last-Event-ID` gets what it missed, from any process, and no stream holds a
database connection. A `user.deleted` event, appended in the same Lua script, records a
tombstone (the user id, scored by the event's id) in a sorted set beside the history; reads
return, with each step of events, the tombstones newer than them (users.stream.redaction takes
those users out). Tombstones go when the history trims past them.

Ids are numbered within an epoch (users/lua/stream_epoch.lua), and a client's id names its
epoch (`<channel>@<epoch>:<n>`, users.stream.encoding): after a Redis failover the new primary
may lack the last events, and starts a new epoch, so a client whose id is of another epoch (or
ahead of the history) gets stream-reset: never a gap, nor an id that comes again with other
content.
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
    epoch: str = ""
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

    def __init__(self, message: str, current_id: int, epoch: str = "") -> None:
        super().__init__(message)
        self.current_id = current_id
        self.epoch = epoch


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
        event_id, epoch = self._append(
            keys=list(history_keys(channel)),
            args=[
                event_type,
                data,
                settings.STREAM_HISTORY,
                settings.STREAM_HISTORY_MB * 2**20,
                deleted_id,
            ],
        )
        return Event(channel, event_type, data, id=int(event_id), epoch=epoch)

    def backlog(self, channel: str, last_id: int, epoch: str) -> tuple[int, int]:
        """(events, bytes) a resume after `last_id` of `epoch` would replay; (0, 0) when none or
        when the id is not in the history (that resume is a stream-reset)."""
        id_key, log_key, sizes_key, _, _, epoch_key = history_keys(channel)
        events, size = self._backlog(
            keys=[id_key, log_key, sizes_key, epoch_key], args=[last_id, epoch]
        )
        return int(events), int(size)

    def read(
        self, channel: str, last_id: int, *, epoch: str | None = None, max_events: int,
        max_bytes: int,
        backlog: bool = False, encoded: bool = False,
    ) -> HistoryRead:  # fmt: skip
        """Events after `last_id` of `epoch`: at most `max_events`, and `max_bytes` of data (one
        event at least), deleted users taken out; with `encoded`, as EncodedEvents
        (replay_body). An id of another epoch is lost; `epoch` None: the history's now."""
        id_key, log_key, sizes_key, _, deleted_key, epoch_key = history_keys(channel)
        current, status, current_epoch, *rest = self._read(
            keys=[id_key, log_key, sizes_key, deleted_key, epoch_key],
            args=[
                last_id,
                max_events,
                max_bytes,
                "1" if backlog else "0",
                "*" if epoch is None else epoch,
            ],
        )
        if status == 1:
            return HistoryRead(current, current_epoch, up_to_date=True)
        if status in (2, 3):
            return HistoryRead(current, current_epoch, lost=True)
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
                body = replay_body(
                    channel, current_epoch, event_id, values["t"], values["d"], deleted
                )
                if body is not None:
                    events.append(EncodedEvent(event_id, body))
                continue
            event = Event(channel, values["t"], values["d"], id=event_id, epoch=current_epoch)
            event = without_deleted_users(event, deleted) if deleted else event
            if event is not None:
                events.append(event)
        events.reverse()
        return HistoryRead(
            current,
            current_epoch,
            events,
            backlog_events=backlog_events,
            backlog_bytes=backlog_bytes,
            last_read_id=last_read_id,
        )

    def get_events(
        self, channel: str, last_id: int, limit: int = 100, *, epoch: str | None = None
    ) -> list[Event]:
        """Events after `last_id` of `epoch` (default: the history's now)."""
        read = self.read(channel, last_id, epoch=epoch, max_events=limit, max_bytes=2**62)
        if read.lost:
            raise EventDoesNotExist(
                f"event {last_id} is not in the history", read.current_id, read.epoch
            )
        return read.events

    def get_current_id(self, channel: str) -> int:
        return int(stream_client().get(history_keys(channel)[0]) or 0)

    def get_position(self, channel: str) -> tuple[str, int]:
        """(epoch, last id) of the history now; the epoch made if there is none yet."""
        read = self.read(channel, 0, epoch="-", max_events=1, max_bytes=1)  # no epoch's id
        return read.epoch, read.current_id
