"""Delivery to a process's open streams: one reader task per channel follows the history.

For each channel with streams open in the process, one reader task follows the history itself
(XREAD BLOCK from the last id it delivered) and hands each event to the process's streams,
through their Listener queues. The history is written in id order, so the reader gets events in
order whichever process sent them; after losing Redis it connects again with backoff and goes on
from its last id, so nothing appended meanwhile is missed or sent twice. A stream whose queue
overflowed, or that sees a live event skip ids, reads the history from its own last id. When
the ids go back (the history was lost: Redis flushed, or restarted without its data), or the
epoch changes (a Redis failover: users.stream.history), the reader sends its streams to the
history too, which tells them stream-reset. The same XREAD follows the
principal-change notices (users.events.principals_changed): the streams of the accounts named
check their client again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import suppress
from dataclasses import dataclass, field

from users import cache
from users.redis import lua_source, stream_reader_client
from users.stream.encoding import Event

logger = logging.getLogger(__name__)

# Events a stream's queue holds; one more and it reads the history itself (overflow).
MAX_PENDING = 10


class Listener:
    """One open stream's queue: the events delivered to it, by channel, and the flags that
    send it to the history (`overflow`) or have it check its client again (`recheck`)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.aevent = asyncio.Event()
        self.user_id: int | str = ""
        self.channels: set[str] = set()
        self.channel_items: dict[str, list[Event]] = {}
        self.overflow = False
        self.recheck = False

    def assign_loop(self) -> None:
        self.loop = asyncio.get_running_loop()

    def wake_threadsafe(self) -> None:
        self.loop.call_soon_threadsafe(self.aevent.set)


# A reader's XREAD BLOCK comes back empty-handed after this long; it then checks that the
# history is still there (a flushed Redis starts the ids again) and that it still has streams.
# Its socket waits a little longer: a dead connection fails there and is made again.
READER_BLOCK_SECONDS = 10.0
READER_MAX_BACKOFF = 5.0
# Events taken per read: as many as a stream's queue holds before it overflows (and the stream
# reads the history itself).
READER_BATCH = MAX_PENDING
# A new stream waits this long for its process's reader to be connected, else it ends.
READER_START_TIMEOUT = 5.0


@dataclass(eq=False)
class _Reader:
    """The task following one channel's history, and the last id it delivered (None until it
    first reached Redis)."""

    task: asyncio.Task | None = None
    last_id: int | None = None
    epoch: str | None = None  # of the history last_id is numbered in
    started: asyncio.Event = field(default_factory=asyncio.Event)
    notice_id: str | None = None  # the last principal-change notice read


class HistoryListenerManager:
    """The registry of this process's open streams, fed by one reader task per channel that
    follows the channel's history (XREAD BLOCK from the last id it delivered)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listeners_by_channel: dict[str, set[Listener]] = {}
        self._readers: dict[str, _Reader] = {}
        self.connections = 0  # how many times a reader connected to Redis; for tests and logs

    def add_listener(self, listener: Listener) -> None:
        loop = asyncio.get_running_loop()
        with self.lock:
            for channel in listener.channels:
                self.listeners_by_channel.setdefault(channel, set()).add(listener)
                reader = self._readers.get(channel)
                if reader is None or reader.task.done() or reader.task.get_loop() is not loop:
                    reader = self._readers[channel] = _Reader()
                    reader.task = loop.create_task(self._read_forever(channel, reader))

    def remove_listener(self, listener: Listener) -> None:
        with self.lock:
            for channel in listener.channels:
                listeners = self.listeners_by_channel.get(channel, set())
                listeners.discard(listener)
                if not listeners:
                    self.listeners_by_channel.pop(channel, None)

    def add_to_queues(self, channel: str, event: Event) -> None:
        """Queue `event` for every stream of `channel`; a full queue marks its stream as
        overflowed instead (it reads the history from its own last id)."""
        with self.lock:
            wake = []
            for listener in self.listeners_by_channel.get(channel, ()):
                items = listener.channel_items.setdefault(channel, [])
                if len(items) < MAX_PENDING:
                    items.append(event)
                    wake.append(listener)
                else:
                    listener.overflow = True
            for listener in wake:
                listener.wake_threadsafe()

    async def delivered_id(self, channel: str) -> tuple[str, int]:
        """(epoch, last id) this process's reader of `channel` delivered, once it is connected:
        a stream that registered its listener before asking gets every event after it.
        Raises TimeoutError when the reader cannot reach Redis."""
        reader = self._readers[channel]
        async with asyncio.timeout(READER_START_TIMEOUT):
            await reader.started.wait()
        return reader.epoch, reader.last_id

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
        id_key, log_key, sizes_key, _, deleted_key, epoch_key = cache.history_keys(channel)
        notices_key = cache.principal_changes_key()
        delay = 0.5
        while self._wanted(channel, reader):
            client = stream_reader_client(block_seconds=READER_BLOCK_SECONDS)
            # Registered on this connection's client only (it is made again on each connect).
            read = client.register_script(lua_source("stream_read"))
            history = [id_key, log_key, sizes_key, deleted_key, epoch_key]
            try:
                self._continue_from(channel, reader, *await _position(read, history))
                self._notices_from(channel, reader, await client.xrevrange(notices_key, count=1))
                reader.started.set()
                self.connections += 1
                if self.connections > 1:
                    logger.info("sse: history reader connected again")
                delay = 0.5
                while self._wanted(channel, reader):
                    reply = await client.xread(
                        {log_key: f"{reader.last_id}-0", notices_key: reader.notice_id},
                        count=READER_BATCH,
                        block=int(READER_BLOCK_SECONDS * 1000),
                    )
                    if not reply:
                        self._continue_from(channel, reader, *await _position(read, history))
                        newest = await client.xrevrange(notices_key, count=1)
                        self._notices_from(channel, reader, newest)
                        continue
                    for key, entries in reply:
                        if key == notices_key:
                            reader.notice_id = entries[-1][0]
                            self._recheck(channel, _notice_accounts(entries))
                            continue
                        for entry_id, fields in entries:
                            event_id = int(entry_id.split("-", 1)[0])
                            epoch = fields.get("e")
                            if epoch != reader.epoch:  # a failover since: streams reset
                                self._reset_streams(channel)
                                reader.epoch = epoch
                            reader.last_id = event_id
                            self.add_to_queues(
                                channel,
                                Event(channel, fields["t"], fields["d"], event_id, epoch),
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

    def _continue_from(self, channel: str, reader: _Reader, current_id: int, epoch: str) -> None:
        """Set where `reader` goes on from: its last id, or the newest for a new reader (its
        streams read what came before from the history themselves)."""
        if reader.last_id is not None and (current_id < reader.last_id or epoch != reader.epoch):
            # The history is gone (Redis flushed, or restarted without its data: the ids start
            # again) or another epoch began (a failover): the streams hear so (stream-reset)
            # from the history.
            logger.warning("sse: the history of %s was lost; resetting its streams", channel)
            self._reset_streams(channel)
        elif reader.last_id is not None:
            return
        reader.last_id, reader.epoch = current_id, epoch

    def _reset_streams(self, channel: str) -> None:
        with self.lock:
            for listener in self.listeners_by_channel.get(channel, ()):
                listener.overflow = True  # the stream's "read the history" path
                listener.wake_threadsafe()

    def _notices_from(self, channel: str, reader: _Reader, newest: list) -> None:
        """Set where `reader` goes on reading principal-change notices from: the newest for a
        new reader (its streams were checked when they opened), else where it was. When the
        notices went back (Redis flushed), every stream is checked: some may have been lost."""
        newest_id = newest[0][0] if newest else "0-0"
        if reader.notice_id is not None and _stream_id(newest_id) >= _stream_id(reader.notice_id):
            return
        if reader.notice_id is not None:
            self._recheck(channel, None)
        reader.notice_id = newest_id

    def _recheck(self, channel: str, accounts: set[int] | None) -> None:
        """Have the streams of these accounts (None: all) check their client again now."""
        with self.lock:
            for listener in self.listeners_by_channel.get(channel, ()):
                if accounts is None or getattr(listener, "user_id", None) in accounts:
                    listener.recheck = True
                    listener.wake_threadsafe()


async def _position(read, keys: list[str]) -> tuple[int, str]:
    """The history's (last id, epoch) now: the read script's answer to an empty read (it makes
    the epoch when there is none)."""
    current, _, epoch = (await read(keys=keys, args=[0, 1, 1, "0", "-"]))[:3]
    return int(current), epoch


def _stream_id(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _notice_accounts(entries: list) -> set[int] | None:
    """The accounts named by principal-change notices (users.events.principals_changed); None
    when one of them says every account ("*")."""
    accounts: set[int] = set()
    for _, fields in entries:
        value = fields.get("a", "*")
        if value == "*":
            return None
        accounts.update(int(part) for part in value.split(",") if part.isdigit())
    return accounts


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
