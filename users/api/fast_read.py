"""The hot read, `GET /users/{id}` from a JSON client (an API token, or anonymous in public-read
mode), answered without DRF.

One Redis round trip (users.cache.afast_read) fetches the cached user, the token's cached
principal and the client's rate-limit count; PostgreSQL is asked only on a miss (of the user or
of the principal) or when Redis is down. The decisions are DRF's for the same request: the same
rule and words (users.refusals), the same limits (users.ratelimit), the same bodies.
Served ahead of Django by users.api.asgi.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from users import cache, ratelimit, selectors
from users.access import Principal, token_digest, token_from_authorization
from users.payloads import to_json
from users.ratelimit import account_window, account_window_parts, anon_window
from users.refusals import (
    NOT_FOUND,
    Refusal,
    error_body,
    invalid_credentials,
    refusal,
    throttled,
)

# Same headers as the DRF path would vary on; nosniff as SecurityMiddleware would add.
JSON_HEADERS = {"Vary": "Accept, Authorization, Cookie", "X-Content-Type-Options": "nosniff"}


class Answer(NamedTuple):
    status: int
    body: bytes
    headers: dict[str, str]


def _refused(answer: Refusal) -> Answer:
    return Answer(answer.status, error_body(answer.detail), answer.headers)


_NOT_FOUND = Answer(404, error_body(NOT_FOUND), {})


def fast_path_serves(*, method: str, has_query: bool, accept: str, session: bool) -> bool:
    """JSON GETs without options, whatever their Authorization header (a token, none, or
    another scheme, which is anonymous here as in DRF); browsers (HTML, sessions) go to DRF."""
    return method == "GET" and not has_query and not session and "text/html" not in accept


def _released(function, release_connection: bool):
    """Run `function` in a thread; outside Django's request cycle nobody else hands the pooled
    connection back, so do it here."""

    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            if release_connection:
                close_old_connections()

    return sync_to_async(run)


@lru_cache(maxsize=1024)
def _decoded(cached: bytes) -> Principal:
    """Decode a cached principal once: the same few clients send most requests."""
    return Principal.decode(cached)


def _load_user_json(user_id: int) -> bytes | None:
    payload = selectors.user_load_payload(user_id=user_id)
    return None if payload is None else to_json(payload).encode()


def _load_principal(digest: str) -> tuple[Principal | None, int | None]:
    """A principal from PostgreSQL (a cache miss, or Redis down), with its account's hit."""
    principal = selectors.principal_load(digest=digest)
    count = None
    if principal is not None:
        window = account_window(principal.account_id)
        if window is not None:
            count = ratelimit.throttle_hit(window.key, ttl=window.seconds)
    return principal, count


async def _before_token_lookup(digest: str, address: str) -> Answer | None:
    """As the API's charge_token_lookup: a token Redis holds no principal for costs the client
    address a hit (429 past its limit), and one refused a moment ago is refused again (401),
    both before PostgreSQL is asked."""
    window = anon_window(address)
    count, known_invalid = await cache.atoken_lookup_gate(
        digest, window=(window.key, window.seconds) if window else None
    )
    if window is not None and count is not None and count > window.limit:
        return _refused(throttled(window.left))
    if known_invalid:
        return _refused(invalid_credentials())
    return None


async def read_user(
    user_id: int, *, authorization: str | None, address: str, release_connection: bool = False
) -> Answer:
    """The answer to GET /users/{user_id} from `address` with this Authorization header."""
    token = token_from_authorization(authorization)
    digest = token_digest(token) if token else None
    if token is not None and digest is None:  # malformed header, or not one of our tokens
        return _refused(invalid_credentials())
    if digest is None:
        refused = refusal(None, "view", authorization=authorization)
        if refused is not None:
            return _refused(refused)
    anon = anon_window(address) if digest is None else None
    parts = account_window_parts() if digest is not None else None
    read = await cache.afast_read(
        user_id,
        digest=digest,
        anon_window=(anon.key, anon.seconds) if anon else None,
        account_window=(parts[0], parts[1], parts[2].seconds) if parts else None,
    )
    count, window = read.count, anon
    if digest is not None:
        window = parts[2] if parts else None
        if read.principal is not None:
            principal = _decoded(read.principal)
        else:
            # Redis down: no second wait on it; PostgreSQL answers as it would anyway.
            gated = await _before_token_lookup(digest, address) if read.redis_ok else None
            if gated is not None:
                return gated
            principal, count = await _released(_load_principal, release_connection)(digest)
        if principal is None:
            return _refused(invalid_credentials())
        refused = refusal(principal, "view")
        if refused is not None:
            return _refused(refused)
    if window is not None and count is not None and count > window.limit:
        return _refused(throttled(window.left))
    body = read.user_json
    if body is None:
        body = await _released(_load_user_json, release_connection)(user_id)
        if body is None:
            return _NOT_FOUND
    return Answer(200, body, {})
