"""Reads of users: cache first, PostgreSQL as the source of truth."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import QuerySet

from users import cache
from users.models import User
from users.payloads import user_payload


def user_list() -> QuerySet[User]:
    return User.objects.all()


def user_get_payload(*, user_id: int) -> dict[str, Any] | None:
    """One user's payload from Redis, or from PostgreSQL (filling Redis) on a miss."""
    cached = cache.cached_user_json(user_id)
    if cached is not None:
        return json.loads(cached)
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
