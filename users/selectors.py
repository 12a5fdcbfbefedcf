"""Reads of users: cache first, PostgreSQL as the source of truth."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import QuerySet

from users import cache
from users.models import User
from users.payloads import user_payload

# Ids are PostgreSQL bigints; anything larger cannot exist (and must not reach a query).
MAX_USER_ID = 2**63 - 1


def user_list() -> QuerySet[User]:
    """All users in primary-key order; the API narrows it with users.filters.UserFilter."""
    return User.objects.order_by("id")


def user_get_payload(*, user_id: int) -> dict[str, Any] | None:
    """One user's payload from Redis, or from PostgreSQL (filling Redis) on a miss."""
    cached = cache.cached_user_json(user_id)
    if cached is not None:
        return json.loads(cached)
    return user_load_payload(user_id=user_id)


def user_load_payload(*, user_id: int) -> dict[str, Any] | None:
    """One user's payload read from PostgreSQL, filling the cache (the miss half of a read)."""
    if not 0 < user_id <= MAX_USER_ID:
        return None
    user = User.objects.filter(id=user_id).first()
    if user is None:
        return None
    payload = user_payload(user)
    version = (
        cache.ingest_version(run_id=user.source_run_id, line=user.source_line)
        if user.source_run_id is not None
        else 0
    )
    cache.cache_user_if_absent(user.id, version, payload)
    return payload
