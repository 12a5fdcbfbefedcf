"""Per-client stream slots: at most SSE_MAX_STREAMS_PER_CLIENT open streams per client.

A client is an account, or the hashed client address of an anonymous client in public-read
mode. Counted in Redis across every web process: a sorted set per client of stream ids scored by
an expiry that each open stream pushes forward every STREAM_SLOT_REFRESH seconds (a crashed
process's streams age out within STREAM_SLOT_SECONDS); a closing stream takes its id out at once.
"""

from __future__ import annotations

import logging
import time
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings

from users.redis import script, stream_client

logger = logging.getLogger(__name__)

# An open stream's place lasts this long unless the stream renews it (every
# STREAM_SLOT_REFRESH seconds, at the latest with its keep-alive): the places of a process that
# died age out after it.
STREAM_SLOT_SECONDS = 60
STREAM_SLOT_REFRESH = 20
# What a refused client is told to wait (a place frees when one of its streams closes).
STREAM_LIMIT_RETRY_AFTER = 10


class StreamSlot:
    """One open stream's place among its client's SSE_MAX_STREAMS_PER_CLIENT."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.stream_id = uuid.uuid4().hex
        self.renewed = 0.0
        self._released = False

    def take(self) -> bool:
        """Take a place (False: the client has all its streams open). Raises on Redis errors."""
        taken = script(stream_client(), "stream_slot_take")(
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
        script(stream_client(), "stream_slot_renew")(
            keys=[self.key], args=[self.stream_id, STREAM_SLOT_SECONDS]
        )

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            stream_client().zrem(self.key, self.stream_id)
        except Exception as exc:  # it ages out
            logger.warning("sse: could not free a stream's place (%s)", exc)

    async def arelease(self) -> None:
        if not self._released:
            await sync_to_async(self.release, thread_sensitive=False)()
