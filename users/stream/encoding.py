"""What a stream writes: the event type, the SSE text of events and of the stream's own
notices (stream-open, keep-alive, stream-reset, stream-closed), and the per-process sharing of
the bytes of big live events."""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass
class Event:
    """One event of a channel's history: its type, its data (JSON text) and its id there."""

    channel: str
    type: str
    data: Any
    id: int | None = None
    epoch: str | None = None  # of the history the id is numbered in


# Events at least this long (an ingest batch is about 1 MB) are encoded once per process and
# the bytes shared by every open stream; small ones are encoded per stream.
SHARED_ENCODING_MIN_LENGTH = 4096
_encoded: OrderedDict[tuple, tuple[str, bytes]] = OrderedDict()
_encoded_lock = threading.Lock()

_FIELD_BREAKS = re.compile(r"[\r\n\0]")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def sse_text(event_type: str, data: Any, event_id: str | None = None) -> str:
    """The SSE text of one event: type and id without line breaks or NULs, one `data:` line
    per line of `data`."""
    event_type = _FIELD_BREAKS.sub("", str(event_type))
    if event_id is not None:
        event_id = _FIELD_BREAKS.sub("", str(event_id))
    out = f"event: {event_type}\n"
    if event_id:
        out += f"id: {event_id}\n"
    for line in _LINE_BREAKS.split(str(data)):
        out += f"data: {line}\n"
    return out + "\n"


def encode_event(event_type: str, data: str, event_id: str | None) -> bytes:
    """The SSE text of an event (sse_text); JSON without line breaks (all of ours) skips its
    per-line split, a regex pass over ~1 MB batches."""
    if not isinstance(data, str) or "\n" in data or "\r" in data or "\0" in event_type:
        return sse_text(event_type, data, event_id).encode()
    event_type = event_type.replace("\r", "").replace("\n", "")
    head = f"event: {event_type}\nid: {event_id}\n" if event_id else f"event: {event_type}\n"
    return b"".join((head.encode(), b"data: ", data.encode(), b"\n\n"))


def encode_live_event(event: Event, event_id: str | None) -> bytes:
    """encode_event() of a live event: streams of one process receive the very same `data`
    object, so big ones are encoded once."""
    data = event.data
    if not isinstance(data, str) or len(data) < SHARED_ENCODING_MIN_LENGTH:
        return encode_event(event.type, data, event_id)
    key = (event.type, event_id, id(data))
    with _encoded_lock:
        hit = _encoded.get(key)
        if hit is not None and hit[0] is data:
            return hit[1]
    body = encode_event(event.type, data, event_id)
    with _encoded_lock:
        _encoded[key] = (data, body)
        while len(_encoded) > 8:
            _encoded.popitem(last=False)
    return body


# A stream's first write: padding (old browsers buffered the first 2 KB) and stream-open.
STREAM_OPENING = (":" + " " * 2048 + "\n\n" + "event: stream-open\ndata:\n\n").encode()
# Idle streams get an SSE comment this often so proxies keep them open (clients see no event).
KEEP_ALIVE_SECONDS = 20
KEEP_ALIVE_COMMENT = b": keep-alive\n\n"


def event_id_text(channel: str, epoch: str, event_id: int) -> str:
    """`<channel>@<epoch>:<n>` (the channel quoted, so it holds no "@", ":" or ","; users.stream.
    history says why ids name their epoch)."""
    return f"{quote(channel)}@{epoch}:{event_id}"


def stream_reset(channel: str, epoch: str, current_id: int) -> bytes:
    """Tell the client the history cannot bring it up to date: reload through the API."""
    return sse_text(
        "stream-reset",
        json.dumps({"channels": [channel]}),
        event_id_text(channel, epoch, current_id),
    ).encode()


def stream_closed(reason: tuple[str, str]) -> bytes:
    """The last event of a stream its client may no longer read. No id: a client resuming
    later does so from the last event it was sent."""
    code, detail = reason
    return sse_text("stream-closed", json.dumps({"reason": code, "detail": detail})).encode()
