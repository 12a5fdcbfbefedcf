"""Who may do what with users: the one rule every path applies (the DRF API, the fast read
ahead of Django, the SSE stream and the live page), and API tokens.

An account may `view`, `add` or `delete` users when it has the model permission
(`users.view_user`, `users.add_user`, `users.delete_user`), usually through the `reader` or
`writer` group (created by a migration, restored after every migrate). Reads need `view`
unless settings.API_READS_REQUIRE_AUTH is off (public-read mode). A client is known by a
`Principal`: its account and what it may do, taken from a session's user or an API token.
Tokens are checked against their SHA-256 digest; the principal of a token is kept in Redis for
a few seconds (users.cache), so a warm read needs no PostgreSQL round trip, and dropped when
the token or the account's permissions change. What a refused client is told is written in
users.refusals.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from importlib import import_module
from types import SimpleNamespace
from typing import NamedTuple

from django.conf import settings

logger = logging.getLogger(__name__)

ACTIONS = ("view", "add", "delete")
# The groups a migration creates (users.services.roles_ensure restores them), and their rights.
ROLES = {"reader": ("view",), "writer": ("view", "add", "delete")}
# Tokens look like "vw_<43 url-safe characters>" (256 random bits).
TOKEN_PREFIX = "vw_"
# Longer strings are not our tokens: refuse them before hashing anything a client sent.
MAX_TOKEN_LENGTH = 100


class InvalidCredentials(Exception):
    """Credentials that name our scheme but are no good (401): a malformed `Authorization:
    Token` header, or an unknown, expired or revoked token."""


class Principal(NamedTuple):
    """An authenticated client: its account, what it may do, and until when (epoch seconds;
    None: no expiry)."""

    account_id: int
    actions: frozenset[str]
    expires_at: float | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def encode(self) -> str:
        """The cached form: "<account id>|<actions>|<expiry>" (users.cache keys it by digest)."""
        expiry = "" if self.expires_at is None else f"{self.expires_at:.0f}"
        return f"{self.account_id}|{','.join(sorted(self.actions))}|{expiry}"

    @classmethod
    def decode(cls, text: str | bytes) -> Principal:
        if isinstance(text, bytes):
            text = text.decode()
        account, actions, expiry = text.split("|")
        return cls(
            int(account),
            frozenset(a for a in actions.split(",") if a),
            float(expiry) if expiry else None,
        )


def reads_require_auth() -> bool:
    return getattr(settings, "API_READS_REQUIRE_AUTH", True)


def may(principal: Principal | None, action: str) -> bool:
    """The rule: may this client (None: anonymous) `view`, `add` or `delete` users?"""
    if action == "view" and not reads_require_auth():
        return True
    return principal is not None and action in principal.actions and not principal.expired()


def principal_for_account(account) -> Principal | None:
    """The principal of a logged-in account (a session), None for anonymous or inactive ones."""
    if account is None or not account.is_authenticated or not account.is_active:
        return None
    return Principal(
        account.pk, frozenset(a for a in ACTIONS if account.has_perm(f"users.{a}_user"))
    )


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str | None:
    """The SHA-256 hex digest a token is stored as; None for what cannot be a token."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    return hashlib.sha256(token.encode()).hexdigest()


def token_from_authorization(value: str | bytes | None) -> str | None:
    """The token of an `Authorization: Token <token>` header; "" for a malformed one, None when
    the header is absent or another scheme."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "token":
        return None
    token = token.strip()
    return token if token and " " not in token else ""


# Who may import a CSV file (the admin's "Import users" page, ingest.uploads): a staff account
# with the permission of the API's writes.
IMPORT_PERMISSION = "users.add_user"


def may_import(account) -> bool:
    """Whether this account may use the "Import users" page."""
    return bool(
        account is not None
        and account.is_authenticated
        and account.is_active
        and account.is_staff
        and account.has_perm(IMPORT_PERMISSION)
    )


def session_may_import(session_key: str) -> bool:
    """Whether the session with this key is logged in to an account that may import: checked
    from the session cookie alone, before the request body is read (viswals/request_limits.py,
    through settings.ADMIN_IMPORT_SESSION_CHECK, lets only such requests send bodies up to
    ADMIN_IMPORT_MAX_BYTES). The account is resolved as AuthenticationMiddleware would
    (django.contrib.auth.get_user: the session's backend, and its password hash still
    matching)."""
    from django.contrib.auth import get_user

    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return may_import(get_user(SimpleNamespace(session=session)))
