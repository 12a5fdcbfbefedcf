"""What goes onto the SSE stream. Called by services after commit, never from views.

Event types: `user.created`, `user.updated`, `user.deleted` (data: the user payload, or
{"id": ...} for a delete) and `users.ingested` (one per stored ingest batch: run, batch, users).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)


def _send(event_type: str, data: dict[str, Any] | str) -> None:
    """Send an event; `data` is a dict, or JSON text already encoded."""
    from django_eventstream import send_event

    try:
        send_event(
            settings.EVENTSTREAM_USERS_CHANNEL,
            event_type,
            data,
            json_encode=not isinstance(data, str),
        )
    except Exception:
        # The write is committed; a stream outage must not turn it into an error.
        logger.exception("events: could not send %s", event_type)


def user_created(payload: dict[str, Any]) -> None:
    _send("user.created", payload)


def user_updated(payload: dict[str, Any]) -> None:
    _send("user.updated", payload)


def user_deleted(user_id: int) -> None:
    _send("user.deleted", {"id": user_id})


def users_ingested(*, run_id: int, batch: int, users_json: list[str]) -> None:
    """One event per stored batch (not per user), carrying the batch's users."""
    _send(
        "users.ingested",
        f'{{"run":{run_id},"batch":{batch},"count":{len(users_json)},'
        f'"users":[{",".join(users_json)}]}}',
    )
