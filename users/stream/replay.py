"""Catch-up from the history: a Last-Event-ID resume, or a stream fallen behind live.

Bounded: at most SSE_REPLAY_MAX_EVENTS events / SSE_REPLAY_MAX_BYTES of history per catch-up;
beyond that the client gets `stream-reset` (reload through the API), as when it is further
behind than the history. The history is read in steps of at most REPLAY_STEP_EVENTS events and
REPLAY_STEP_BYTES (one event at least), and events are written one at a time, so a stream holds
about one step in memory, whatever it is replaying. Big events come redacted and encoded from a
per-process cache (users.stream.redaction.replay_body).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings

from users.stream.encoding import stream_reset
from users.stream.history import REPLAY_STEP_BYTES, REPLAY_STEP_EVENTS, RedisStreamStorage

logger = logging.getLogger(__name__)


class StreamEnded(Exception):
    """The history could not be read: end the stream (the client resumes with its last id)."""


@dataclass
class Progress:
    """Where a stream is: the last id its client has been brought to, and the history bytes
    its last catch-up sent."""

    position: int
    epoch: str | None = None  # of the history `position` is numbered in
    replayed: int = 0


async def catch_up_from_history(channel: str, progress: Progress) -> AsyncIterator[bytes]:
    """Yield the events after `progress.position` from the history, within the replay bounds,
    or a stream-reset; `progress` follows the last id the client has been brought to."""
    storage = RedisStreamStorage()
    read = sync_to_async(storage.read, thread_sensitive=False)
    max_events, max_bytes = settings.SSE_REPLAY_MAX_EVENTS, settings.SSE_REPLAY_MAX_BYTES
    sent_events = sent_bytes = progress.replayed = 0
    last_id = progress.position
    first = True
    while True:
        try:
            step = await read(
                channel, last_id, epoch=progress.epoch, max_events=REPLAY_STEP_EVENTS,
                max_bytes=REPLAY_STEP_BYTES, backlog=first, encoded=True,
            )  # fmt: skip
        except Exception as exc:
            logger.warning("sse: could not read the history (%s); ending a stream", exc)
            raise StreamEnded from exc
        too_much = first and (step.backlog_events > max_events or step.backlog_bytes > max_bytes)
        first = False
        if step.lost or too_much:
            progress.position, progress.epoch = step.current_id, step.epoch
            yield stream_reset(channel, step.epoch, step.current_id)
            return
        if step.up_to_date:
            return
        pending, last_read_id = step.events[::-1], step.last_read_id
        del step
        while pending:
            event_id, body = pending.pop()  # while the client reads, only this step is held
            sent_events += 1
            sent_bytes += len(body)
            if sent_events > max_events or sent_bytes > max_bytes:  # it grew meanwhile
                current = await sync_to_async(storage.get_current_id, thread_sensitive=False)(
                    channel
                )
                progress.position = current
                yield stream_reset(channel, progress.epoch, current)
                return
            progress.position = event_id
            progress.replayed = sent_bytes
            yield body
            body = None
        last_id = progress.position = max(progress.position, last_read_id)
