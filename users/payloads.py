"""The one JSON shape of a user, used by the API, the Redis cache and the SSE stream."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol


class UserLike(Protocol):
    id: int
    first_name: str
    last_name: str
    email_address: str
    created_at: datetime
    deleted_at: datetime | None
    merged_at: datetime | None
    parent_user_id: int | None


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z suffix, as Django REST framework renders datetimes."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def user_payload(user: UserLike) -> dict[str, Any]:
    """Serialize a User (or an ingest UserRow: same attributes) to plain JSON-ready data."""
    return {
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email_address": user.email_address,
        "created_at": iso_utc(user.created_at),
        "deleted_at": iso_utc(user.deleted_at),
        "merged_at": iso_utc(user.merged_at),
        "parent_user_id": user.parent_user_id,
    }


# One encoder, built once: json.dumps with non-default options builds a new one per call.
to_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
