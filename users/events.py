"""What goes onto the SSE stream. Called by services after commit, never from views.

Event types: `user.created`, `user.updated`, `user.deleted` (data: the user payload, or
{"id": ...} for a delete) and `users.ingested` (one per stored ingest batch: run, batch, users).
Data is encoded by users.payloads, so an event carries a user in the very bytes that
`GET /users/{id}` and the cache hold.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from users.payloads import to_json

logger = logging.getLogger(__name__)


def _send(event_type: str, data: str | bytes) -> None:
    """Append an event, its data JSON text already encoded (bytes: UTF-8), to the channel's
    history: every web process reads it from there (users.sse)."""
    from users.sse import RedisStreamStorage

    try:
        RedisStreamStorage().append_event(settings.EVENTSTREAM_USERS_CHANNEL, event_type, data)
    except Exception:
        # The write is committed; a stream outage must not turn it into an error.
        logger.exception("events: could not send %s", event_type)


def user_created(payload: dict[str, Any]) -> None:
    _send("user.created", to_json(payload))


def user_updated(payload: dict[str, Any]) -> None:
    _send("user.updated", to_json(payload))


def user_deleted(user_id: int) -> None:
    _send("user.deleted", to_json({"id": user_id}))


def users_ingested(*, run_id: int, batch: int, users_json: list[bytes]) -> None:
    """One event per stored batch (not per user), carrying the batch's users (UTF-8 JSON)."""
    head = b'{"run":%d,"batch":%d,"count":%d,"users":[' % (run_id, batch, len(users_json))
    _send("users.ingested", head + b",".join(users_json) + b"]}")  # ~2 MB: kept as bytes
