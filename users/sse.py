"""The users Server-Sent Events stream, built on django-eventstream.

What the library leaves to us lives here:

- `RedisStreamStorage`: the resumable event history. One capped Redis stream per channel holds
  the last `EVENTSTREAM_HISTORY` events (at most `EVENTSTREAM_HISTORY_MB` of data) with
  consecutive integer ids, so a client reconnecting
  with `Last-Event-ID` gets what it missed, from any process. The library's Django model
  storage would hold a database connection (and a thread) per open stream; this holds none.
- `SupervisedListenerManager`: replaces the library's per-process Redis pub/sub listener, which
  is started once and dies silently for good when Redis stays away too long (or on a malformed
  message). Ours reconnects with backoff, and after every (re)subscription, or on a gap in the
  ids it receives, makes every open stream re-read the history, so nothing published meanwhile
  is lost and late messages are not sent twice.
- `UsersChannelManager` and `users_sse`: the stream serves exactly the users channel.

Events are sent by `users.events`, from services, after commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from contextlib import suppress
from typing import Any

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django_eventstream import eventstream as eventstream_module
from django_eventstream import utils as eventstream_utils
from django_eventstream import views as eventstream_views
from django_eventstream.channelmanager import DefaultChannelManager
from django_eventstream.event import Event
from django_eventstream.storage import EventDoesNotExist, StorageBase

from users import selectors

logger = logging.getLogger(__name__)

# Hard-coded in django-eventstream (eventstream.send_event): every environment sharing a Redis
# publishes here, hence the per-environment channel names (settings.EVENTSTREAM_USERS_CHANNEL).
PUBSUB_CHANNEL = "events_channel"

# --- History ----------------------------------------------------------------------------------

# Id allocation, append and trimming in one atomic step: ids are consecutive, and an event with a
# smaller id is always already in the history when a larger one is published. The history keeps
# at most ARGV[3] events and ARGV[4] bytes of data (an ingest batch event is ~1 MB), always at
# least the newest event; KEYS[3] lists the sizes of the kept events, KEYS[4] holds their sum.
_APPEND = """
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], id .. '-0', 't', ARGV[1], 'd', ARGV[2])
local kept = redis.call('RPUSH', KEYS[3], #ARGV[2])
local bytes = redis.call('INCRBY', KEYS[4], #ARGV[2])
local max_events, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local drop = 0
while kept - drop > 1 and (kept - drop > max_events or bytes > max_bytes) do
  bytes = bytes - tonumber(redis.call('LINDEX', KEYS[3], drop))
  drop = drop + 1
end
if drop > 0 then
  redis.call('LTRIM', KEYS[3], drop, -1)
  redis.call('SET', KEYS[4], bytes)
  redis.call('XTRIM', KEYS[2], 'MINID', (id - (kept - drop) + 1) .. '-0')
end
return id
"""
# Returns {current_id, status, entries}: status 0 = ok, 1 = up to date, 2 = id from the future
# (history lost, e.g. Redis flushed), 3 = expired (trimmed out of the history).
_READ = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = tonumber(ARGV[1])
if last == current then return {current, 1} end
if last > current then return {current, 2} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = current + 1
if #first > 0 then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
if last < oldest - 1 then return {current, 3} end
return {current, 0, redis.call('XRANGE', KEYS[2], '(' .. last .. '-0', '+', 'COUNT', ARGV[2])}
"""

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


def history_keys(channel: str) -> tuple[str, str, str, str]:
    """The keys holding a channel's history: last id, events, their sizes and total size."""
    prefix = settings.EVENTSTREAM_KEY_PREFIX
    return (
        f"{prefix}:id:{channel}",
        f"{prefix}:log:{channel}",
        f"{prefix}:sizes:{channel}",
        f"{prefix}:bytes:{channel}",
    )


class RedisStreamStorage(StorageBase):
    """Bounded event history in Redis; ids are consecutive integers per channel."""

    def __init__(self) -> None:
        client = _redis()
        self._append = client.register_script(_APPEND)
        self._read = client.register_script(_READ)

    def append_event(self, channel: str, event_type: str, data: str) -> Event:
        event_id = self._append(
            keys=list(history_keys(channel)),
            args=[
                event_type,
                data,
                settings.EVENTSTREAM_HISTORY,
                settings.EVENTSTREAM_HISTORY_MB * 2**20,
            ],
        )
        return Event(channel, event_type, data, id=int(event_id))

    def get_events(self, channel: str, last_id: int, limit: int = 100) -> list[Event]:
        current, status, *rest = self._read(
            keys=list(history_keys(channel)[:2]), args=[last_id, limit]
        )
        if status == 1:
            return []
        if status == 2:
            raise EventDoesNotExist(f"event {last_id} is not in the history", current)
        if status == 3:
            raise EventDoesNotExist(f"event {last_id} is no longer in the history", current)
        fields_of = (dict(zip(entry[1][::2], entry[1][1::2], strict=True)) for entry in rest[0])
        ids = (int(entry[0].split("-", 1)[0]) for entry in rest[0])
        return [
            Event(channel, fields["t"], fields["d"], id=event_id)
            for event_id, fields in zip(ids, fields_of, strict=True)
        ]

    def get_current_id(self, channel: str) -> int:
        return int(_redis().get(history_keys(channel)[0]) or 0)


# --- Channels ---------------------------------------------------------------------------------


class UsersChannelManager(DefaultChannelManager):
    """Every request streams the users channel, and only that (no `?channel=` picking)."""

    def get_channels_for_request(self, request, view_kwargs):
        return {settings.EVENTSTREAM_USERS_CHANNEL}

    def can_read_channel(self, user, channel):
        return channel == settings.EVENTSTREAM_USERS_CHANNEL

    def is_channel_reliable(self, channel):
        return True


# --- Cross-process delivery -------------------------------------------------------------------

# Seconds without a message after which the listener pings Redis to detect a dead connection.
LISTENER_PING_INTERVAL = 10.0
LISTENER_MAX_BACKOFF = 5.0
# Several processes send events: ids are allocated in order, but their messages can arrive out
# of order. A message that skips ids waits this long for the missing ones before the streams
# are sent to read the history instead (re-reading costs each stream a Redis read and its own
# encoding of ~1 MB batch events, which under a big import is most of the streaming work).
REORDER_WAIT = 0.25


class SupervisedListenerManager(eventstream_views.ListenerManager):
    """The library's listener registry, fed by a Redis subscriber that survives outages."""

    def __init__(self) -> None:
        super().__init__()
        self.redis_listener = None  # the library's own one-shot listener is never started
        self._task: asyncio.Task | None = None
        self._last_ids: dict[str, int] = {}
        self._early: dict[str, dict[int, Event]] = {}  # per channel: events ahead of a gap
        self.subscriptions = 0  # how many times the subscriber (re)subscribed; for tests/logs

    def add_listener(self, listener) -> None:
        self._ensure_subscriber()
        super().add_listener(listener)

    def _ensure_subscriber(self) -> None:
        loop = asyncio.get_running_loop()
        with self.lock:
            if self._task is None or self._task.done() or self._task.get_loop() is not loop:
                self._task = loop.create_task(self._subscribe_forever())

    async def _subscribe_forever(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        delay = 0.5
        while True:
            # No silent internal reconnects: every lost connection comes back here, so the
            # streams re-read the history for whatever was published while we were away.
            client = Redis(
                **{
                    **settings.EVENTSTREAM_REDIS,
                    "retry": Retry(NoBackoff(), 0),
                    "socket_timeout": None,  # waits are bounded by get_message(timeout=...)
                    "socket_keepalive": True,
                    "client_name": f"{settings.EVENTSTREAM_KEY_PREFIX}:listener",
                }
            )
            pubsub = client.pubsub()  # get_message() returns None only on a quiet timeout
            try:
                await pubsub.subscribe(PUBSUB_CHANNEL)
                self.subscriptions += 1
                if self.subscriptions > 1:
                    logger.info("sse: Redis subscriber reconnected")
                self._last_ids.clear()
                self._early.clear()
                self._resync(None)
                delay = 0.5
                pinged = False
                while True:
                    message = await pubsub.get_message(timeout=LISTENER_PING_INTERVAL)
                    if message is None:
                        if pinged:  # a half-open connection: writes pass, nothing comes back
                            raise ConnectionError("no reply to PING")
                        await pubsub.ping()
                        pinged = True
                        continue
                    pinged = False
                    if message["type"] == "message":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: reconnect, never die
                logger.warning("sse: Redis subscriber lost (%s); retrying in %.1fs", exc, delay)
            finally:
                with suppress(Exception):
                    await pubsub.aclose()
                with suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTENER_MAX_BACKOFF)

    def _dispatch(self, raw: bytes | str) -> None:
        if not self.listeners_by_channel:
            return  # no open stream in this process: skip decoding (batches are ~1 MB)
        try:
            message = json.loads(raw)
            channel = message["channel"]
            event_type = message["event_type"]
            data = message["data"]
            pub_id = message.get("pub_id")
            event_id = int(pub_id) if pub_id is not None else None
        except (ValueError, KeyError, TypeError):
            logger.warning("sse: ignoring a malformed message on %s", PUBSUB_CHANNEL)
            return
        with self.lock:
            if channel not in self.listeners_by_channel:
                return  # another environment's channel, or nobody listening here
        event = Event(channel, event_type, data, id=event_id)
        last = self._last_ids.get(channel)
        if event_id is None or last is None or event_id == last + 1:
            if event_id is not None:
                self._last_ids[channel] = event_id
            self.add_to_queues(channel, event)
            self._deliver_early(channel)
        elif event_id <= last:
            return  # late: already delivered, or read from the history after a gap
        else:
            early = self._early.setdefault(channel, {})
            if not early:
                asyncio.get_running_loop().call_later(
                    REORDER_WAIT, self._give_up_on_gap, channel, last + 1
                )
            early[event_id] = event

    def _deliver_early(self, channel: str) -> None:
        """Deliver held events that the last delivery made consecutive."""
        early = self._early.get(channel)
        while early and self._last_ids[channel] + 1 in early:
            event = early.pop(self._last_ids[channel] + 1)
            self._last_ids[channel] = event.id
            self.add_to_queues(channel, event)

    def _give_up_on_gap(self, channel: str, missing_id: int) -> None:
        early = self._early.get(channel)
        if not early:
            return  # the gap filled in time
        last = self._last_ids.get(channel)
        if last is not None and last >= missing_id:  # it filled, but a later gap is open
            asyncio.get_running_loop().call_later(
                REORDER_WAIT, self._give_up_on_gap, channel, last + 1
            )
            return
        # Everything up to the newest held id is in the history already: read it from there.
        self._last_ids[channel] = max(early)
        early.clear()
        self._resync(channel)

    def _resync(self, channel: str | None) -> None:
        """Make open streams (of one channel, or all) re-read the history from their last id."""
        with self.lock:
            if channel is None:
                listeners = {lst for group in self.listeners_by_channel.values() for lst in group}
            else:
                listeners = set(self.listeners_by_channel.get(channel, ()))
            for listener in listeners:
                listener.overflow = True  # the stream's "queue overflowed: read storage" path
                listener.wake_threadsafe()


def install_listener_manager() -> SupervisedListenerManager:
    """Put our listener manager in place of the library's (idempotent)."""
    manager = eventstream_views.listener_manager
    if not isinstance(manager, SupervisedListenerManager):
        with _client_lock:
            manager = eventstream_views.listener_manager
            if not isinstance(manager, SupervisedListenerManager):
                manager = SupervisedListenerManager()
                eventstream_views.listener_manager = manager
    return manager


install_listener_manager()

# --- Encoding once per event, not once per client ---------------------------------------------

# Events at least this long (an ingest batch is about 1 MB) are encoded once per process and
# shared by every open stream; the library would encode them again for each client.
SHARED_ENCODING_MIN_LENGTH = 4096
_encoded: OrderedDict[tuple, tuple[str, str]] = OrderedDict()
_encoded_lock = threading.Lock()
_library_sse_encode_event = eventstream_utils.sse_encode_event


def _sse_encode_event(event_type, data, event_id=None, escape=False, json_encode=False):
    if json_encode or escape or not isinstance(data, str) or len(data) < SHARED_ENCODING_MIN_LENGTH:
        return _library_sse_encode_event(event_type, data, event_id, escape, json_encode)
    # Streams of one process receive the very same `data` object for a live event.
    key = (event_type, event_id, id(data))
    with _encoded_lock:
        hit = _encoded.get(key)
        if hit is not None and hit[0] is data:
            return hit[1]
    body = _library_sse_encode_event(event_type, data, event_id)
    with _encoded_lock:
        _encoded[key] = (data, body)
        while len(_encoded) > 8:
            _encoded.popitem(last=False)
    return body


# stream() imports it from django_eventstream.utils each time a stream starts.
eventstream_utils.sse_encode_event = _sse_encode_event

# send_event also formats every event for a GRIP proxy (Pushpin), escaping it one character at a
# time in Python, even when no proxy is configured: about 0.3 s of a worker's CPU per 1 MB ingest
# batch event, more than storing the batch. Without a proxy there is nothing to publish to.
_library_publish_event = eventstream_module.publish_event


def _publish_event_to_grip_proxy(*args, **kwargs) -> None:
    if getattr(settings, "GRIP_URL", None) or getattr(settings, "GRIP_PROXIES", None):
        _library_publish_event(*args, **kwargs)


eventstream_module.publish_event = _publish_event_to_grip_proxy

# --- View -------------------------------------------------------------------------------------


# django-eventstream keeps idle streams open with a named event every 20 s; an SSE comment does
# the same for proxies without showing up as an event in clients.
LIBRARY_KEEP_ALIVE = b"event: keep-alive\ndata:\n\n"
KEEP_ALIVE_COMMENT = b": keep-alive\n\n"


async def keep_alives_as_comments(chunks):
    async for chunk in chunks:
        yield KEEP_ALIVE_COMMENT if chunk == LIBRARY_KEEP_ALIVE else chunk


def users_sse(request: HttpRequest) -> HttpResponse:
    """GET /users/sse: the users event stream (resumable with Last-Event-ID)."""
    install_listener_manager()
    response = eventstream_views.events(request, channels=[settings.EVENTSTREAM_USERS_CHANNEL])
    if getattr(response, "is_async", False):
        response.streaming_content = keep_alives_as_comments(response.streaming_content)
    # Reading request.user may have taken a pooled database connection; a stream lives for
    # hours and needs none, so give it back now rather than when the stream ends.
    for connection in connections.all(initialized_only=True):
        connection.close()
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


def users_live(request: HttpRequest) -> HttpResponse:
    """GET /users/live: a page listing users as they arrive, change and go, opening with the
    newest users (only for clients allowed to read users)."""
    newest = (
        selectors.user_list_newest(limit=LIVE_PAGE_ROWS)
        if request.user.has_perm("users.view_user")
        else []
    )
    return render(
        request,
        "users/live.html",
        {"stream_url": reverse("users-sse"), "keep": LIVE_PAGE_ROWS, "newest": newest},
    )


# Rows the live page keeps on screen; older ones are dropped (an import brings thousands).
LIVE_PAGE_ROWS = 50
