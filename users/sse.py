"""The users Server-Sent Events stream: our own view over django-eventstream's parts.

What lives here:

- Who may stream: the API's read rule (users.access.may "view", through
  users.selectors.principal_for_request: an `Authorization: Token` header or a session), and
  at most settings.SSE_MAX_STREAMS_PER_CLIENT open streams per client (an account, or the
  hashed client address of an anonymous client in public-read mode), counted in Redis across
  every web process: a sorted set per client of stream ids scored by an expiry that each open
  stream pushes forward every STREAM_SLOT_REFRESH seconds (a crashed process's streams age out
  within STREAM_SLOT_SECONDS); a closing stream takes its id out at once.
- `RedisStreamStorage`: the resumable event history. One capped Redis stream per channel holds
  the last `EVENTSTREAM_HISTORY` events (at most `EVENTSTREAM_HISTORY_MB` of data) with
  consecutive integer ids, so a client reconnecting with `Last-Event-ID` gets what it missed,
  from any process, and no stream holds a database connection.
- Deleted users leave the history: a `user.deleted` event, appended in the same Lua script,
  records a tombstone (the user id, scored by the event's id) in a sorted set beside the history.
  Reading the history returns, with each step of events, the tombstones newer than them; events
  older than a user's tombstone lose that user (its `user.created`/`user.updated` events are
  dropped, it is cut out of `users.ingested` batches, which are only parsed when they hold the
  id). A delete costs nothing more than its event; a replay one sorted-set range per step. A user
  created again after the delete (same id) is kept, its events being newer than the tombstone.
  Tombstones go when the history trims past them, so there are never more than history events.
- Bounded replays: a client resuming with `Last-Event-ID` (or falling behind live, below) is
  sent at most SSE_REPLAY_MAX_EVENTS events / SSE_REPLAY_MAX_BYTES of history per catch-up;
  beyond that it gets `stream-reset` (reload through the API), as when it is further behind than
  the history. The history is read in steps of at most REPLAY_STEP_EVENTS events and
  REPLAY_STEP_BYTES (one event at least), and events are written one at a time, so a stream
  holds about one step in memory, whatever it is replaying.
- Stalled clients: writes to a stream's socket wait at most SSE_SEND_TIMEOUT seconds
  (`stalled_streams_closed`, an ASGI wrapper); then the connection is aborted, so a client that
  stops reading costs one pending write, not a growing buffer.
- `HistoryListenerManager`: the delivery to a process's open streams. For each channel with
  streams open in the process, one reader task follows the history itself (XREAD BLOCK from the
  last id it delivered) and hands each event to the process's streams, through the library's
  Listener queues. The history is written in id order, so the reader gets events in order
  whichever process sent them; after losing Redis it connects again with backoff and goes on
  from its last id, so nothing appended meanwhile is missed or sent twice. A new stream starts
  at the id its reader has delivered, before it sends stream-open. A stream whose queue
  overflowed, or that sees a live event skip ids (its reader fell behind the history's
  trimming), reads the history from its own last id: the missed events, or a stream-reset.
  When the ids go back (the history was lost: Redis flushed, or restarted without its data)
  the reader sends its streams to the history too, which tells them stream-reset.
- Large live events (ingest batches, ~1 MB) are encoded once per process and the same bytes
  shared by every open stream.

Events are appended by `users.events`, from services, after commit; nothing else carries them
between processes (no pub/sub).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django_eventstream import views as eventstream_views
from django_eventstream.event import Event
from django_eventstream.storage import EventDoesNotExist, StorageBase
from django_eventstream.utils import augment_cors_headers, sse_encode_event

from users import selectors
from users.access import InvalidCredentials, Principal, may
from users.api.fast_read import NOT_AUTHENTICATED, PERMISSION_DENIED, WWW_AUTHENTICATE
from users.consistency import read_alias
from viswals.client_address import request_client_address
from viswals.db_router import read_with_fallback
from viswals.http_protocol import ABORT_EXTENSION

logger = logging.getLogger(__name__)

# --- History ----------------------------------------------------------------------------------

# Id allocation, append and trimming in one atomic step: ids are consecutive, and an event with a
# smaller id is always already in the history when a larger one is published. The history keeps
# at most ARGV[3] events and ARGV[4] bytes of data (an ingest batch event is ~1 MB), always at
# least the newest event; KEYS[3] lists the sizes of the kept events, KEYS[4] holds their sum.
# ARGV[5], for a user.deleted event, is the user's id: its tombstone (KEYS[5]) is scored by this
# event's id; tombstones no kept event is older than are trimmed with the history.
_APPEND = """
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], id .. '-0', 't', ARGV[1], 'd', ARGV[2])
local kept = redis.call('RPUSH', KEYS[3], #ARGV[2])
local bytes = redis.call('INCRBY', KEYS[4], #ARGV[2])
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[5], id, ARGV[5]) end
local max_events, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local drop = 0
while kept - drop > 1 and (kept - drop > max_events or bytes > max_bytes) do
  bytes = bytes - tonumber(redis.call('LINDEX', KEYS[3], drop))
  drop = drop + 1
end
if drop > 0 then
  local oldest = id - (kept - drop) + 1
  redis.call('LTRIM', KEYS[3], drop, -1)
  redis.call('SET', KEYS[4], bytes)
  redis.call('XTRIM', KEYS[2], 'MINID', oldest .. '-0')
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', oldest)
end
return id
"""
# One step of a replay after ARGV[1]: as many events as fit in ARGV[3] bytes (at least one, at
# most ARGV[2]), chosen from the sizes list before any event is loaded; with ARGV[4] = '1' also
# the size of the whole backlog. Returns {current_id, status, backlog events, backlog bytes,
# entries, tombstones newer than the first entry}: status 0 = ok, 1 = up to date, 2 = id from
# the future (history lost, e.g. Redis flushed), 3 = expired (trimmed out of the history).
_READ = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = tonumber(ARGV[1])
if last == current then return {current, 1} end
if last > current then return {current, 2} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = current + 1
if #first > 0 then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
if last < oldest - 1 then return {current, 3} end
local start = last - current + redis.call('LLEN', KEYS[3])
if start < 0 then start = 0 end
local backlog = 0
if ARGV[4] == '1' then
  for _, size in ipairs(redis.call('LRANGE', KEYS[3], start, -1)) do
    backlog = backlog + tonumber(size)
  end
end
local budget, used, want = tonumber(ARGV[3]), 0, 0
for _, size in ipairs(redis.call('LRANGE', KEYS[3], start, start + tonumber(ARGV[2]) - 1)) do
  size = tonumber(size)
  if want > 0 and used + size > budget then break end
  used = used + size
  want = want + 1
end
if want == 0 then want = 1 end
local entries = redis.call('XRANGE', KEYS[2], '(' .. last .. '-0', '+', 'COUNT', want)
local tombstones = {}
if #entries > 0 then
  local first_id = string.match(entries[1][1], '^(%d+)')
  tombstones = redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. first_id, '+inf', 'WITHSCORES')
end
return {current, 0, current - last, backlog, entries, tombstones}
"""

# A replay reads the history this much at a time.
REPLAY_STEP_EVENTS = 100
REPLAY_STEP_BYTES = 2**20

_client_lock = threading.Lock()
_clients: dict[tuple, Any] = {}


def _redis():
    """One thread-safe client per process: the library makes a storage object per thread."""
    import redis

    key = tuple(sorted(settings.EVENTSTREAM_REDIS.items()))
    client = _clients.get(key)
    if client is None:
        with _client_lock:
            client = _clients.get(key)
            if client is None:
                client = redis.Redis(**{**settings.EVENTSTREAM_REDIS, "decode_responses": True})
                _clients[key] = client
    return client


def history_keys(channel: str) -> tuple[str, str, str, str, str]:
    """The keys holding a channel's history: last id, events, their sizes, total size and the
    deleted users' tombstones."""
    prefix = settings.EVENTSTREAM_KEY_PREFIX
    return (
        f"{prefix}:id:{channel}",
        f"{prefix}:log:{channel}",
        f"{prefix}:sizes:{channel}",
        f"{prefix}:bytes:{channel}",
        f"{prefix}:deleted:{channel}",
    )


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


class RedisStreamStorage(StorageBase):
    """Bounded event history in Redis; ids are consecutive integers per channel."""

    def __init__(self) -> None:
        client = _redis()
        self._append = client.register_script(_APPEND)
        self._read = client.register_script(_READ)

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
                settings.EVENTSTREAM_HISTORY,
                settings.EVENTSTREAM_HISTORY_MB * 2**20,
                deleted_id,
            ],
        )
        return Event(channel, event_type, data, id=int(event_id))

    def read(
        self, channel: str, last_id: int, *, max_events: int, max_bytes: int, backlog: bool = False
    ) -> HistoryRead:
        """Events after `last_id`: at most `max_events`, and `max_bytes` of data (one event at
        least), deleted users taken out."""
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
        events = []
        for entry_id, fields in entries:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            event = Event(channel, values["t"], values["d"], id=int(entry_id.split("-", 1)[0]))
            event = without_deleted_users(event, deleted) if deleted else event
            if event is not None:
                events.append(event)
        return HistoryRead(
            current,
            events,
            backlog_events=backlog_events,
            backlog_bytes=backlog_bytes,
            last_read_id=int(entries[-1][0].split("-", 1)[0]) if entries else last_id,
        )

    def get_events(self, channel: str, last_id: int, limit: int = 100) -> list[Event]:
        read = self.read(channel, last_id, max_events=limit, max_bytes=2**62)
        if read.lost:
            raise EventDoesNotExist(f"event {last_id} is not in the history", read.current_id)
        return read.events

    def get_current_id(self, channel: str) -> int:
        return int(_redis().get(history_keys(channel)[0]) or 0)


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
    return Event(event.channel, event.type, json.dumps(batch, separators=(",", ":")), event.id)


def _holds_user(data: str, user_id: int) -> bool:
    return f'"id":{user_id},' in data or f'"id": {user_id},' in data


# --- Delivery to this process's streams ------------------------------------------------------

# A reader's XREAD BLOCK comes back empty-handed after this long; it then checks that the
# history is still there (a flushed Redis starts the ids again) and that it still has streams.
# Its socket waits a little longer: a dead connection fails there and is made again.
READER_BLOCK_SECONDS = 10.0
READER_MAX_BACKOFF = 5.0
# Events taken per read: as many as a stream's queue holds before it overflows (and the stream
# reads the history itself).
READER_BATCH = eventstream_views.MAX_PENDING
# A new stream waits this long for its process's reader to be connected, else it ends.
READER_START_TIMEOUT = 5.0


@dataclass(eq=False)
class _Reader:
    """The task following one channel's history, and the last id it delivered (None until it
    first reached Redis)."""

    task: asyncio.Task | None = None
    last_id: int | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)


class HistoryListenerManager(eventstream_views.ListenerManager):
    """The library's registry of open streams, fed by one reader task per channel in this
    process that follows the channel's history (XREAD BLOCK from the last id it delivered)."""

    def __init__(self) -> None:
        super().__init__()
        self.redis_listener = None  # the library's pub/sub listener: nothing publishes there
        self._readers: dict[str, _Reader] = {}
        self.connections = 0  # how many times a reader connected to Redis; for tests and logs

    def add_listener(self, listener) -> None:
        super().add_listener(listener)
        loop = asyncio.get_running_loop()
        with self.lock:
            for channel in listener.channels:
                reader = self._readers.get(channel)
                if reader is None or reader.task.done() or reader.task.get_loop() is not loop:
                    reader = self._readers[channel] = _Reader()
                    reader.task = loop.create_task(self._read_forever(channel, reader))

    async def delivered_id(self, channel: str) -> int:
        """The last id this process's reader of `channel` delivered, once it is connected:
        a stream that registered its listener before asking gets every event after it.
        Raises TimeoutError when the reader cannot reach Redis."""
        reader = self._readers[channel]
        async with asyncio.timeout(READER_START_TIMEOUT):
            await reader.started.wait()
        return reader.last_id

    def _wanted(self, channel: str, reader: _Reader) -> bool:
        """Whether `reader` is still `channel`'s reader: it leaves once no stream here reads
        the channel (under the lock: a stream opening meanwhile starts a new reader)."""
        with self.lock:
            if self._readers.get(channel) is not reader:
                return False
            if self.listeners_by_channel.get(channel):
                return True
            del self._readers[channel]
            return False

    async def _read_forever(self, channel: str, reader: _Reader) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        id_key, log_key, *_ = history_keys(channel)
        delay = 0.5
        while self._wanted(channel, reader):
            client = Redis(
                **{
                    **settings.EVENTSTREAM_REDIS,
                    "retry": Retry(NoBackoff(), 0),  # every failure comes back here
                    "socket_timeout": READER_BLOCK_SECONDS + 5,
                    "socket_keepalive": True,
                    "decode_responses": True,
                    "client_name": f"{settings.EVENTSTREAM_KEY_PREFIX}:reader",
                }
            )
            try:
                self._continue_from(channel, reader, await client.get(id_key))
                reader.started.set()
                self.connections += 1
                if self.connections > 1:
                    logger.info("sse: history reader connected again")
                delay = 0.5
                while self._wanted(channel, reader):
                    reply = await client.xread(
                        {log_key: f"{reader.last_id}-0"},
                        count=READER_BATCH,
                        block=int(READER_BLOCK_SECONDS * 1000),
                    )
                    if not reply:
                        self._continue_from(channel, reader, await client.get(id_key))
                        continue
                    for entry_id, fields in reply[0][1]:
                        event_id = int(entry_id.split("-", 1)[0])
                        reader.last_id = event_id
                        self.add_to_queues(
                            channel, Event(channel, fields["t"], fields["d"], event_id)
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: connect again and go on from last_id
                logger.warning("sse: history reader lost (%s); retrying in %.1fs", exc, delay)
            finally:
                with suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, READER_MAX_BACKOFF)

    def _continue_from(self, channel: str, reader: _Reader, current: str | None) -> None:
        """Set where `reader` goes on from: its last id, or the newest for a new reader (its
        streams read what came before from the history themselves)."""
        current_id = int(current or 0)
        if reader.last_id is not None and current_id < reader.last_id:
            # The history is gone (Redis flushed, or restarted without its data) and the ids
            # start again: the streams hear so (stream-reset) from the history.
            logger.warning("sse: the history of %s was lost; resetting its streams", channel)
            with self.lock:
                for listener in self.listeners_by_channel.get(channel, ()):
                    listener.overflow = True  # the stream's "read the history" path
                    listener.wake_threadsafe()
        elif reader.last_id is not None:
            return
        reader.last_id = current_id


_manager_lock = threading.Lock()
_manager: HistoryListenerManager | None = None


def listener_manager() -> HistoryListenerManager:
    """The process's registry of open streams."""
    global _manager
    if _manager is None:
        with _manager_lock:
            if _manager is None:
                _manager = HistoryListenerManager()
    return _manager


# --- Streams per client -----------------------------------------------------------------------

# An open stream's place lasts this long unless the stream renews it (every
# STREAM_SLOT_REFRESH seconds, at the latest with its keep-alive): the places of a process that
# died age out after it.
STREAM_SLOT_SECONDS = 60
STREAM_SLOT_REFRESH = 20
# What a refused client is told to wait (a place frees when one of its streams closes).
STREAM_LIMIT_RETRY_AFTER = 10

# Server time, so web hosts' clocks need not agree. Returns 1 when the stream got a place.
_SLOT_TAKE = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
_SLOT_RENEW = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def streams_key(*, principal: Principal | None, address: str) -> str:
    """The Redis key counting a client's open streams: per account, else per client address
    (hashed: bounded size whatever the address looks like)."""
    prefix = settings.EVENTSTREAM_KEY_PREFIX
    if principal is not None:
        return f"{prefix}:streams:a:{principal.account_id}"
    return f"{prefix}:streams:ip:{hashlib.sha256(address.encode()).hexdigest()[:32]}"


class StreamSlot:
    """One open stream's place among its client's SSE_MAX_STREAMS_PER_CLIENT."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.stream_id = uuid.uuid4().hex
        self.renewed = 0.0
        self._released = False

    def take(self) -> bool:
        """Take a place (False: the client has all its streams open). Raises on Redis errors."""
        taken = _redis().register_script(_SLOT_TAKE)(
            keys=[self.key],
            args=[self.stream_id, settings.SSE_MAX_STREAMS_PER_CLIENT, STREAM_SLOT_SECONDS],
        )
        self.renewed = time.monotonic()
        return bool(taken)

    async def renew_if_due(self) -> None:
        if time.monotonic() - self.renewed < STREAM_SLOT_REFRESH:
            return
        self.renewed = time.monotonic()
        try:
            await sync_to_async(self._renew, thread_sensitive=False)()
        except Exception as exc:  # the stream goes on; its place may age out meanwhile
            logger.warning("sse: could not renew a stream's place (%s)", exc)

    def _renew(self) -> None:
        _redis().register_script(_SLOT_RENEW)(
            keys=[self.key], args=[self.stream_id, STREAM_SLOT_SECONDS]
        )

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            _redis().zrem(self.key, self.stream_id)
        except Exception as exc:  # it ages out
            logger.warning("sse: could not free a stream's place (%s)", exc)

    async def arelease(self) -> None:
        if not self._released:
            await sync_to_async(self.release, thread_sensitive=False)()


# --- Encoding ---------------------------------------------------------------------------------

# Events at least this long (an ingest batch is about 1 MB) are encoded once per process and
# the bytes shared by every open stream; small ones are encoded per stream.
SHARED_ENCODING_MIN_LENGTH = 4096
_encoded: OrderedDict[tuple, tuple[str, bytes]] = OrderedDict()
_encoded_lock = threading.Lock()


def encode_event(event_type: str, data: str, event_id: str | None) -> bytes:
    """The SSE text of an event, as the library writes it (sse_encode_event); JSON without line
    breaks (all of ours) skips its per-line split, a regex pass over ~1 MB batches."""
    if not isinstance(data, str) or "\n" in data or "\r" in data or "\0" in event_type:
        return sse_encode_event(event_type, data, event_id=event_id).encode()
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


# The library's first write: padding (old browsers buffered the first 2 KB) and stream-open.
STREAM_OPENING = (":" + " " * 2048 + "\n\n" + "event: stream-open\ndata:\n\n").encode()
# Idle streams get an SSE comment this often so proxies keep them open (clients see no event).
KEEP_ALIVE_SECONDS = 20
KEEP_ALIVE_COMMENT = b": keep-alive\n\n"


def event_id_text(channel: str, event_id: int) -> str:
    return f"{quote(channel)}:{event_id}"


def _reset(channel: str, current_id: int) -> bytes:
    return sse_encode_event(
        "stream-reset",
        {"channels": [channel]},
        event_id=event_id_text(channel, current_id),
        json_encode=True,
    ).encode()


class StreamEnded(Exception):
    """The history could not be read: end the stream (the client resumes with its last id)."""


async def _catch_up(channel: str, last_id: int, position: list[int]) -> AsyncIterator[bytes]:
    """Yield the events after `last_id` from the history, within the replay bounds, or a
    stream-reset; `position[0]` follows the last id the client has been brought to."""
    storage = RedisStreamStorage()
    read = sync_to_async(storage.read, thread_sensitive=False)
    max_events, max_bytes = settings.SSE_REPLAY_MAX_EVENTS, settings.SSE_REPLAY_MAX_BYTES
    sent_events = sent_bytes = 0
    first = True
    while True:
        try:
            step = await read(
                channel, last_id, max_events=REPLAY_STEP_EVENTS,
                max_bytes=REPLAY_STEP_BYTES, backlog=first,
            )  # fmt: skip
        except Exception as exc:
            logger.warning("sse: could not read the history (%s); ending a stream", exc)
            raise StreamEnded from exc
        too_much = first and (step.backlog_events > max_events or step.backlog_bytes > max_bytes)
        first = False
        if step.lost or too_much:
            position[0] = step.current_id
            yield _reset(channel, step.current_id)
            return
        if step.up_to_date:
            return
        pending, last_read_id = step.events[::-1], step.last_read_id
        del step
        while pending:
            event = pending.pop()
            event_id = event.id
            body = encode_event(event.type, event.data, event_id_text(channel, event_id))
            event = None  # while the client reads, only the encoded bytes are held
            sent_events += 1
            sent_bytes += len(body)
            if sent_events > max_events or sent_bytes > max_bytes:  # it grew meanwhile
                current = await sync_to_async(storage.get_current_id, thread_sensitive=False)(
                    channel
                )
                position[0] = current
                yield _reset(channel, current)
                return
            position[0] = event_id
            yield body
            body = None
        last_id = position[0] = max(position[0], last_read_id)


async def users_stream(
    *, channel: str, last_id: int | None, listener, slot: StreamSlot
) -> AsyncIterator[bytes]:
    """The stream of one client: what it missed (when it gave an id), then live events."""
    manager = listener_manager()
    listener.assign_loop()
    manager.add_listener(listener)
    try:
        try:
            # Every event after this id reaches the listener's queue; the history has those
            # before it (its reads from now on see at least this id). Taken before stream-open:
            # a client gets every event sent once it has seen stream-open.
            delivered = await manager.delivered_id(channel)
        except TimeoutError:
            logger.warning("sse: the history reader is not connected; ending a stream")
            return
        yield STREAM_OPENING
        catch_up = last_id is not None
        position = [delivered if last_id is None else last_id]
        while True:
            if catch_up:
                # Live events queued meanwhile stay queued: those already read from the history
                # are skipped below by their ids.
                async for body in _catch_up(channel, position[0], position):
                    yield body
                catch_up = False
            await slot.renew_if_due()
            try:
                async with asyncio.timeout(KEEP_ALIVE_SECONDS):
                    await listener.aevent.wait()
            except TimeoutError:
                yield KEEP_ALIVE_COMMENT
                continue
            with manager.lock:
                items = listener.channel_items.get(channel, [])
                catch_up = listener.overflow  # its queue overflowed, or the history was lost
                listener.aevent.clear()
                listener.channel_items = {}
                listener.overflow = False
            for event in items:
                if event.id <= position[0]:
                    continue  # already sent from the history
                if event.id > position[0] + 1:
                    # Some are missing: the reader started after this stream, or fell behind
                    # the history's trimming. The history has them (or says stream-reset).
                    catch_up = True
                    break
                position[0] = event.id
                yield encode_live_event(event, event_id_text(channel, event.id))
    except StreamEnded:
        return
    finally:
        listener.aevent.set()
        manager.remove_listener(listener)
        await slot.arelease()


# --- Views ------------------------------------------------------------------------------------

# Last-Event-ID is "<channel>:<n>" (several, comma-separated, in the library's format).
_LAST_ID_PART = re.compile(r"([^:,]{1,200}):([0-9]{1,19})")
INVALID_LAST_EVENT_ID = "Invalid Last-Event-ID: expected '<channel>:<event number>'."


def _last_event_id(request: HttpRequest, channel: str) -> int | None:
    """The client's last event id on `channel` (None: none given, or another channel's).
    Raises ValueError when malformed."""
    value = request.META.get("HTTP_LAST_EVENT_ID")
    if not value:
        value = next((v for v in reversed(request.GET.getlist("lastEventId")) if v), None)
    if not value:
        return None
    found = None
    for part in value.split(","):
        match = _LAST_ID_PART.fullmatch(part.strip())
        if match is None:
            raise ValueError(value)
        if unquote(match[1]) == channel:
            found = int(match[2])
    return found


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None, **extra):
    response = JsonResponse({"detail": detail, **extra}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _read_refusal(request: HttpRequest) -> tuple[HttpResponse | None, Principal | None]:
    """(401/403 response, None) unless the request may read users; then (None, principal)."""
    try:
        principal = selectors.principal_for_request(request)
    except InvalidCredentials as exc:
        return _json_error(401, str(exc), WWW_AUTHENTICATE), None
    if may(principal, "view"):
        return None, principal
    if principal is None:
        return _json_error(401, NOT_AUTHENTICATED, WWW_AUTHENTICATE), None
    return _json_error(403, PERMISSION_DENIED), None


def users_sse(request: HttpRequest) -> HttpResponse:
    """GET /users/sse: the users event stream (resumable with Last-Event-ID)."""
    try:
        return _users_sse(request)
    finally:
        # Reading request.user or a token may have taken a pooled database connection; a
        # stream lives for hours and needs none, so give it back now.
        for connection in connections.all(initialized_only=True):
            connection.close()


def _users_sse(request: HttpRequest) -> HttpResponse:
    refusal, principal = _read_refusal(request)
    if refusal is not None:
        return refusal
    channel = settings.EVENTSTREAM_USERS_CHANNEL
    try:
        last_id = _last_event_id(request, channel)
    except ValueError:
        # The API's one 400 shape: the offending parameter with its messages.
        return JsonResponse({"Last-Event-ID": [INVALID_LAST_EVENT_ID]}, status=400)
    address = request_client_address(request)
    slot = StreamSlot(streams_key(principal=principal, address=address))
    try:
        taken = slot.take()
    except Exception as exc:
        logger.warning("sse: Redis unavailable (%s); refusing a stream", exc)
        return _json_error(503, "The event stream is unavailable; retry shortly.",
                           {"Retry-After": "5"})  # fmt: skip
    if not taken:
        limit = settings.SSE_MAX_STREAMS_PER_CLIENT
        logger.info("sse: %s has %d streams open; refused another (429)",
                    f"account {principal.account_id}" if principal else address, limit)  # fmt: skip
        return _json_error(
            429, f"Too many open streams: at most {limit} per client.",
            {"Retry-After": str(STREAM_LIMIT_RETRY_AFTER)},
        )  # fmt: skip
    listener = eventstream_views.Listener()
    listener.user_id = principal.account_id if principal else "anonymous"
    listener.channels = {channel}
    response = StreamingHttpResponse(
        users_stream(channel=channel, last_id=last_id, listener=listener, slot=slot),
        content_type="text/event-stream",
    )
    response._resource_closers.append(slot.release)  # also when the stream never started
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    augment_cors_headers(response, request)
    return response


def users_live(request: HttpRequest) -> HttpResponse:
    """GET /users/live: a page listing users as they arrive, change and go, opening with the
    newest users. Anonymous visitors are sent to log in (admin login page) unless reads are
    public; accounts without users.view_user are refused."""
    try:
        principal = selectors.principal_for_request(request)
    except InvalidCredentials:
        principal = None
    if not may(principal, "view"):
        if principal is None:
            return redirect_to_login(request.get_full_path(), login_url=reverse("admin:login"))
        raise PermissionDenied
    newest = read_with_fallback(
        lambda database: selectors.user_list_newest(limit=LIVE_PAGE_ROWS, using=database),
        read_alias(account_id=principal.account_id if principal else None),
    )
    return render(
        request,
        "users/live.html",
        {"stream_url": reverse("users-sse"), "keep": LIVE_PAGE_ROWS, "newest": newest},
    )


# Rows the live page keeps on screen; older ones are dropped (an import brings thousands).
LIVE_PAGE_ROWS = 50


# --- Stalled clients --------------------------------------------------------------------------

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
