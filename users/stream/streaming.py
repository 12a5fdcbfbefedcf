"""One client's stream: what it missed (when it gave an id), then live events, with keep-alives,
periodic and notified re-checks of its client, and catch-ups when its queue overflowed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async

from users.stream.clients import StreamClient
from users.stream.delivery import Listener, listener_manager
from users.stream.encoding import (
    KEEP_ALIVE_COMMENT,
    KEEP_ALIVE_SECONDS,
    STREAM_OPENING,
    encode_live_event,
    event_id_text,
    stream_closed,
)
from users.stream.replay import Progress, StreamEnded, catch_up_from_history
from users.stream.slots import StreamSlot

logger = logging.getLogger(__name__)


async def client_stream_body(
    *, channel: str, last_id: tuple[str, int] | None, listener: Listener, slot: StreamSlot,
    client: StreamClient | None = None,
) -> AsyncIterator[bytes]:  # fmt: skip
    """The stream of one client: what it missed (when it gave an id), then live events; ended
    with stream-closed once `client` may no longer read (checked every
    API_TOKEN_CACHE_SECONDS, and at once when a notice says its account changed)."""
    manager = listener_manager()
    listener.assign_loop()
    manager.add_listener(listener)
    try:
        try:
            # Every event after this id reaches the listener's queue; the history has those
            # before it (its reads from now on see at least this id). Taken before stream-open:
            # a client gets every event sent once it has seen stream-open.
            epoch, delivered = await manager.delivered_id(channel)
        except TimeoutError:
            logger.warning("sse: the history reader is not connected; ending a stream")
            return
        yield STREAM_OPENING
        catch_up = last_id is not None
        resumed = catch_up  # its first catch-up was charged when it connected
        if last_id is None:
            progress = Progress(delivered, epoch)
        else:
            resume_epoch, resume_id = last_id
            progress = Progress(resume_id, resume_epoch)
        recheck = False
        wrote = time.monotonic()
        while True:
            if client is not None and (recheck or client.check_in() <= 0):
                recheck = False
                reason = await client.refusal()
                if reason is not None:
                    yield stream_closed(reason)
                    return
            if catch_up:
                # Live events queued meanwhile stay queued: those already read from the history
                # are skipped below by their ids.
                async for body in catch_up_from_history(channel, progress):
                    yield body
                catch_up = False
                wrote = time.monotonic()
                if client is not None and not resumed and progress.replayed:
                    await sync_to_async(client.charge, thread_sensitive=False)(
                        replayed=progress.replayed
                    )
                resumed = False
            await slot.renew_if_due()
            wait = KEEP_ALIVE_SECONDS - (time.monotonic() - wrote)
            if client is not None:
                wait = min(wait, client.check_in())
            try:
                async with asyncio.timeout(max(wait, 0.01)):
                    await listener.aevent.wait()
            except TimeoutError:
                if time.monotonic() - wrote >= KEEP_ALIVE_SECONDS:
                    yield KEEP_ALIVE_COMMENT
                    wrote = time.monotonic()
                continue
            with manager.lock:
                items = listener.channel_items.get(channel, [])
                catch_up = listener.overflow  # its queue overflowed, or the history was lost
                recheck = listener.recheck  # its account changed
                listener.aevent.clear()
                listener.channel_items = {}
                listener.overflow = listener.recheck = False
            if recheck and client is not None:  # before anything queued is sent
                recheck = False
                reason = await client.refusal()
                if reason is not None:
                    yield stream_closed(reason)
                    return
            for event in items:
                if event.epoch != progress.epoch:
                    catch_up = True  # another epoch (a failover): the history says stream-reset
                    break
                if event.id <= progress.position:
                    continue  # already sent from the history
                if event.id > progress.position + 1:
                    # Some are missing: the reader started after this stream, or fell behind
                    # the history's trimming. The history has them (or says stream-reset).
                    catch_up = True
                    break
                progress.position = event.id
                wrote = time.monotonic()
                yield encode_live_event(event, event_id_text(channel, event.epoch, event.id))
    except StreamEnded:
        return
    finally:
        listener.aevent.set()
        manager.remove_listener(listener)
        await slot.arelease()
