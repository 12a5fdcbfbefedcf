"""Reads of users: cache first, PostgreSQL as the source of truth."""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import QuerySet

from users import cache
from users.access import (
    INVALID_TOKEN,
    MALFORMED_AUTHORIZATION,
    InvalidCredentials,
    Principal,
    principal_for_account,
    token_digest,
    token_from_authorization,
)
from users.models import ApiToken, StaleCacheEntry, User
from users.payloads import user_payload

# Ids are PostgreSQL bigints; anything larger cannot exist (and must not reach a query).
MAX_USER_ID = 2**63 - 1


def user_list(*, using: str = DEFAULT_DB_ALIAS) -> QuerySet[User]:
    """All users in primary-key order; the API narrows it with users.filters.UserFilter.
    `using`: a replica's alias for reads that may be a moment stale (users.consistency)."""
    return User.objects.using(using).order_by("id")


def user_get_payload(*, user_id: int) -> dict[str, Any] | None:
    """One user's payload from Redis, or from PostgreSQL (filling Redis) on a miss."""
    cached = cache.cached_user_json(user_id)
    if cached is not None:
        return json.loads(cached)
    return user_load_payload(user_id=user_id)


def user_load_payload(*, user_id: int) -> dict[str, Any] | None:
    """One user's payload read from PostgreSQL, filling the cache (the miss half of a read).
    Always from the primary: a replica's older copy must never be put into Redis."""
    if not 0 < user_id <= MAX_USER_ID:
        return None
    user = User.objects.using(DEFAULT_DB_ALIAS).filter(id=user_id).first()
    if user is None:
        return None
    payload = user_payload(user)
    version = (
        cache.ingest_version(run_id=user.source_run_id, line=user.source_line)
        if user.source_run_id is not None
        else 0
    )
    cache.cache_user_unless_newer(user.id, version, payload)
    return payload


def principal_for_token(*, token: str) -> Principal | None:
    """Who a token belongs to and what it may do; None for an unknown, expired or revoked token
    or an inactive account. Redis first (a few seconds' copy), then PostgreSQL."""
    digest = token_digest(token)
    if digest is None:
        return None
    cached = cache.cached_principal(digest)
    if cached is not None:
        principal = Principal.decode(cached)
        return None if principal.expired() else principal
    return principal_load(digest=digest)


def principal_for_authorization(header: str | bytes | None) -> Principal | None:
    """The principal of an `Authorization: Token <token>` header; None when the header is
    absent or another scheme. Raises InvalidCredentials for a malformed header or an unknown,
    expired or revoked token."""
    token = token_from_authorization(header)
    if token is None:
        return None
    if token == "":
        raise InvalidCredentials(MALFORMED_AUTHORIZATION)
    principal = principal_for_token(token=token)
    if principal is None:
        raise InvalidCredentials(INVALID_TOKEN)
    return principal


def principal_for_request(request) -> Principal | None:
    """Who a plain Django request (not DRF's) comes from: its `Authorization: Token` header's
    principal, else its session account's; None for an anonymous client. Raises
    InvalidCredentials as principal_for_authorization does, as the API does."""
    principal = principal_for_authorization(request.META.get("HTTP_AUTHORIZATION"))
    if principal is None:  # no token header: the session's account, if any
        return principal_for_account(getattr(request, "user", None))
    return principal


def principal_load(*, digest: str) -> Principal | None:
    """A token's principal from PostgreSQL, cached for settings.API_TOKEN_CACHE_SECONDS (never
    past the token's expiry)."""
    token = ApiToken.objects.select_related("account").filter(digest=digest).first()
    if token is None:
        return None
    account_principal = principal_for_account(token.account)
    if account_principal is None:
        return None
    expires_at = float(int(token.expires_at.timestamp())) if token.expires_at else None
    principal = account_principal._replace(expires_at=expires_at)
    if principal.expired():
        return None
    ttl = float(settings.API_TOKEN_CACHE_SECONDS)
    if expires_at is not None:
        ttl = min(ttl, expires_at - time.time())
    cache.cache_principal(digest, principal.encode(), ttl=ttl)
    return principal


def stale_cache_entry_count() -> int:
    """Users whose Redis entries await repair after an outage (services.cache_repair_stale)."""
    return StaleCacheEntry.objects.count()


# Above this many rows (by the planner's statistics) the users are counted from those statistics
# rather than by a full count, which would scan the table on every anonymous page view.
EXACT_COUNT_LIMIT = 100_000


def user_count() -> tuple[int, bool]:
    """How many users there are, and whether that is exact (small tables) or an estimate."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [User._meta.db_table]
        )
        row = cursor.fetchone()
    estimate = row[0] if row else -1
    if estimate < EXACT_COUNT_LIMIT:  # -1: never analysed (a fresh table)
        return User.objects.count(), True
    return estimate, False


def user_list_newest(*, limit: int, using: str = DEFAULT_DB_ALIAS) -> list[dict[str, Any]]:
    """The `limit` most recently created users, newest first, as payloads (`using`: as for
    user_list)."""
    users = User.objects.using(using).order_by("-created_at", "-id")[:limit]
    return [user_payload(user) for user in users]
