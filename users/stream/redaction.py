"""Deleted users taken out of history events, and the per-process cache of big replayed events
once redacted and encoded.

A `user.deleted` event leaves a tombstone beside the history (users.stream.history): events
older than a user's tombstone lose that user when they are read back.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from contextlib import suppress

from users.stream.encoding import (
    SHARED_ENCODING_MIN_LENGTH,
    Event,
    encode_event,
    event_id_text,
)

_USER_EVENTS = ("user.created", "user.updated")


def without_deleted_users(event: Event, deleted: dict[int, int]) -> Event | None:
    """`event` without the users deleted after it (`deleted`: user id -> the id of its
    user.deleted event); None when nothing is left of it."""
    gone = {user for user, at in deleted.items() if at > event.id}
    if not gone:
        return event
    if event.type in _USER_EVENTS:
        with suppress(ValueError, TypeError, AttributeError):
            if json.loads(event.data).get("id") in gone:
                return None
        return event
    if event.type != "users.ingested":
        return event
    data = event.data
    if len(gone) <= 16 and not any(_holds_user(data, user) for user in gone):
        return event  # parsing a ~1 MB batch is the cost to avoid
    try:
        batch = json.loads(data)
        users = [user for user in batch["users"] if user.get("id") not in gone]
    except (ValueError, KeyError, TypeError, AttributeError):
        return event
    if len(users) == len(batch["users"]):
        return event
    batch["users"], batch["count"] = users, len(users)
    data = json.dumps(batch, separators=(",", ":"))
    return Event(event.channel, event.type, data, event.id, event.epoch)


def _holds_user(data: str, user_id: int) -> bool:
    return f'"id":{user_id},' in data or f'"id": {user_id},' in data


# Replayed events at least SHARED_ENCODING_MIN_LENGTH long (ingest batches, ~1-2 MB) are kept
# here once redacted and encoded, up to this many bytes (their history text included), so
# clients resuming from the same place do not each parse and re-encode the same batches.
REPLAY_CACHE_BYTES = 32 * 2**20
_replayed: OrderedDict[tuple, tuple[str, bytes | None]] = OrderedDict()
_replayed_size = 0
_replayed_lock = threading.Lock()


def replay_body(
    channel: str, epoch: str, event_id: int, event_type: str, data: str, deleted: dict[int, int]
) -> bytes | None:
    """The SSE text a replay sends for a history event, without the users deleted after it
    (None: nothing left of it). Big events come from a small per-process cache, keyed by the
    event and by its redaction generation: the newest tombstone newer than the event. Every
    tombstone added is newer than every event kept (the history only trims older ones), so that
    tombstone changes exactly when the users removed from the event do. The history's own text
    is compared too: ids start again when the history is lost (Redis flushed)."""
    generation = max((at for at in deleted.values() if at > event_id), default=0)
    key = (channel, epoch, event_id, event_type, generation)
    big = len(data) >= SHARED_ENCODING_MIN_LENGTH
    if big:
        with _replayed_lock:
            hit = _replayed.get(key)
            if hit is not None and hit[0] == data:
                _replayed.move_to_end(key)
                return hit[1]
    event = Event(channel, event_type, data, id=event_id)
    if generation:
        event = without_deleted_users(event, deleted)
    body = None
    if event is not None:
        body = encode_event(event.type, event.data, event_id_text(channel, epoch, event_id))
    if big:
        _remember_replayed(key, data, body)
    return body


def _remember_replayed(key: tuple, data: str, body: bytes | None) -> None:
    global _replayed_size
    size = len(data) + len(body or b"")
    if size > REPLAY_CACHE_BYTES // 4:
        return
    with _replayed_lock:
        old = _replayed.pop(key, None)
        if old is not None:
            _replayed_size -= len(old[0]) + len(old[1] or b"")
        _replayed[key] = (data, body)
        _replayed_size += size
        while _replayed_size > REPLAY_CACHE_BYTES:
            _, (old_data, old_body) = _replayed.popitem(last=False)
            _replayed_size -= len(old_data) + len(old_body or b"")
