"""What goes onto the SSE stream. Called by services after commit, never from views.

Event types: `user.created`, `user.updated`, `user.deleted` (data: the user payload, or
{"id": ...} for a delete) and `users.ingested` (one per stored ingest batch: run, batch, users).
Data is encoded by users.payloads, so an event carries a user in the very bytes that
`GET /users/{id}` and the cache hold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from users.payloads import to_json

logger = logging.getLogger(__name__)


def _send(event_type: str, data: str | bytes) -> bool:
    """Append an event, its data JSON text already encoded (bytes: UTF-8), to the channel's
    history: every web process reads it from there (users.stream). False when it could not."""
    from users.stream.history import RedisStreamStorage

    try:
        RedisStreamStorage().append_event(settings.STREAM_CHANNEL, event_type, data)
    except Exception:
        # The write is committed; a stream outage must not turn it into an error.
        logger.exception("events: could not send %s", event_type)
        return False
    return True


def user_created(payload: dict[str, Any]) -> bool:
    return _send("user.created", to_json(payload))


def user_updated(payload: dict[str, Any]) -> bool:
    return _send("user.updated", to_json(payload))


def user_deleted(user_id: int) -> bool:
    """False when the event could not be sent: the user is then still in the history's older
    events, until users.services.stream_redactions_apply sends it."""
    return _send("user.deleted", to_json({"id": user_id}))


def users_ingested(*, run_id: int, batch: int, users_json: list[bytes]) -> None:
    """One event per stored batch (not per user), carrying the batch's users (UTF-8 JSON)."""
    head = b'{"run":%d,"batch":%d,"count":%d,"users":[' % (run_id, batch, len(users_json))
    _send("users.ingested", head + b",".join(users_json) + b"]}")  # ~2 MB: kept as bytes


# More ids than this in one notice become "every account" ("*"): open streams all check again.
PRINCIPALS_NOTICE_MAX_IDS = 1000
# Notices kept (approximately): enough for a reader that lost Redis for a moment to catch up.
PRINCIPALS_NOTICE_KEEP = 1000


def principals_changed(account_ids: Iterable[int] | None) -> bool:
    """Tell every web process that these accounts' tokens, sessions or rights changed (None:
    any account's), so their open streams check their client again now rather than at their
    next periodic check (users.stream.clients). Not an event of the users channel: no client
    sees it. False when Redis could not be reached (logged; the periodic check still ends the
    stream)."""
    from users.cache import principal_changes_key
    from users.redis import stream_client

    ids = None if account_ids is None else sorted({int(a) for a in account_ids})
    if ids == []:
        return True
    everyone = ids is None or len(ids) > PRINCIPALS_NOTICE_MAX_IDS
    accounts = "*" if everyone else ",".join(map(str, ids))
    try:
        stream_client().xadd(
            principal_changes_key(),
            {"a": accounts},
            maxlen=PRINCIPALS_NOTICE_KEEP,
            approximate=True,
        )
    except Exception:
        logger.exception("events: could not announce a change of %s's rights", accounts[:40])
        return False
    return True
