"""Every write to users goes through here: API, admin and ingest workers alike.

Each service owns its transaction; the cache refresh and the SSE event run on commit, so a
rolled-back write never reaches Redis or the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from psycopg.adapt import PyFormat

from users import cache, events
from users.access import ROLES, new_token, token_digest
from users.columns import SOURCE_COLUMNS, USER_COLUMNS, UserRow
from users.email_index import EMAIL_INDEX_COLUMNS, stored_emails_packed
from users.models import ApiToken, PendingStreamRedaction, StaleCacheEntry, User
from users.payloads import user_payload, users_json

logger = logging.getLogger(__name__)

API_ID_SEQUENCE = "users_user_api_id_seq"

# Every imported column, in COPY order (users.columns, then the address's blind indexes), and
# its binary COPY type.
_UPSERT_FIELDS = (*USER_COLUMNS, *EMAIL_INDEX_COLUMNS, *SOURCE_COLUMNS)
_UPSERT_COLUMNS = ", ".join(_UPSERT_FIELDS)
_COPY_TYPES = {"BigIntegerField": "int8", "IntegerField": "int4", "CharField": "varchar",
               "DateTimeField": "timestamptz", "TextField": "text", "BinaryField": "bytea",
               "ArrayField": "int4[]"}  # fmt: skip
_UPSERT_TYPES = [
    _COPY_TYPES[User._meta.get_field(name).get_internal_type()] for name in _UPSERT_FIELDS
]
# The trigram buckets go as an int4[] already in PostgreSQL's binary form, sent untouched as
# "bytea" (binary COPY carries no types: the column's own reads them): psycopg's list dumper
# cost ~6 µs a row, more than the encryption (users.email_index.stored_emails_packed).
_UPSERT_TYPES[_UPSERT_FIELDS.index("email_ngrams")] = "bytea"
_EMAIL_AT = USER_COLUMNS.index("email_address")


_SET_LIST = ",\n    ".join(f"{name} = EXCLUDED.{name}" for name in _UPSERT_FIELDS if name != "id")
# A session-local staging table: batches are COPY'd in (binary), then merged in one statement.
# Measured here: ~120k rows/s against ~58k for an unnest() INSERT and ~33k for bulk_create.
_STAGE_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS users_user_stage (LIKE users_user) ON COMMIT DELETE ROWS"
)
_MERGE_SQL = f"""
INSERT INTO users_user AS u ({_UPSERT_COLUMNS})
SELECT {_UPSERT_COLUMNS} FROM users_user_stage
-- Lock rows in one global order, so concurrent batches sharing ids never deadlock.
ORDER BY id
ON CONFLICT (id) DO UPDATE SET
    {_SET_LIST}
-- An older line (earlier run, or earlier line of the same run) never overwrites a newer one.
WHERE u.source_run_id IS NULL
   OR (EXCLUDED.source_run_id, EXCLUDED.source_line) >= (u.source_run_id, u.source_line)
-- xmax is 0 on a row version this statement inserted (not one it updated).
RETURNING u.id, u.xmax = 0
"""


class SourcedUser(NamedTuple):
    """A validated user with the file line it came from."""

    line: int
    user: UserRow


def users_upsert(*, run_id: int, batch: int, rows: Sequence[SourcedUser]) -> int:
    """Insert or update ingested users, later lines winning; return how many rows were written.

    Runs inside the caller's transaction; the cache and the stream are updated on commit.
    """
    latest: dict[int, SourcedUser] = {}
    for row in rows:  # within a batch, the later line of a duplicate id wins
        latest[row.user.id] = row
    if not latest:
        return 0
    sourced = list(latest.values())
    written_ids = _upsert_with_copy(run_id=run_id, rows=sourced)
    written = [row for row in sourced if row.user.id in written_ids]
    new = sum(written_ids.values()) * 2 > len(written_ids)  # mostly inserted rows
    transaction.on_commit(partial(_after_upsert, run_id=run_id, batch=batch, rows=written, new=new))
    return len(written)


def _upsert_with_copy(*, run_id: int, rows: list[SourcedUser]) -> dict[int, bool]:
    """Returns the ids written, each with whether it was inserted (rather than updated)."""
    with connection.cursor() as cursor:
        cursor.execute(_STAGE_SQL)
        # The stage is emptied at commit; this empties it of an earlier call in the same
        # transaction (before the COPY, where it is usually empty already: nothing to do).
        cursor.execute("DELETE FROM users_user_stage")
        # By type name, psycopg picks its DB-API `Binary` dumper for bytea, written in Python
        # (~1 µs a value); the C one it uses for `bytes` anywhere else, for this cursor's COPY.
        raw = cursor.cursor
        raw.adapters.register_dumper(bytes, raw.adapters.get_dumper(bytes, PyFormat.BINARY))
        with raw.copy(
            f"COPY users_user_stage ({_UPSERT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_UPSERT_TYPES)
            # Each address encrypted, its blind indexes after the user's own columns.
            stored = stored_emails_packed([row.user.email_address for row in rows])
            for row, email in zip(rows, stored, strict=True):
                user = row.user
                copy.write_row(
                    (*user[:_EMAIL_AT], email[0], *user[_EMAIL_AT + 1 :], *email[1:],
                     run_id, row.line)
                )  # fmt: skip
        cursor.execute(_MERGE_SQL)
        return dict(cursor.fetchall())


def _after_upsert(*, run_id: int, batch: int, rows: list[SourcedUser], new: bool) -> None:
    # Each user is encoded once, for the cache and the stream alike.
    payloads = users_json([row.user for row in rows])  # UTF-8 bytes
    run_version = cache.ingest_version(run_id=run_id, line=0)  # + line: each row's version
    cached = cache.cache_users_if_newer(
        (
            (row.user.id, run_version + row.line, payload)
            for row, payload in zip(rows, payloads, strict=True)
        ),
        new=new,
    )
    if not cached:
        _remember_stale([row.user.id for row in rows])
    if payloads:
        events.users_ingested(run_id=run_id, batch=batch, users_json=payloads)


def _next_api_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(%s)", [API_ID_SEQUENCE])
        return cursor.fetchone()[0]


def user_create(
    *, first_name: str, last_name: str, email_address: str, created_at: datetime | None = None,
    **columns: Any,
) -> User:  # fmt: skip
    """Create a user with a fresh id from the API range. `columns`: any other of
    users.columns.USER_COLUMNS but the id (the admin sets them; they default to none)."""
    unknown = set(columns) - set(USER_COLUMNS[1:])
    if unknown:
        raise TypeError(f"not a user column: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        user = User.objects.create(
            id=_next_api_id(),
            first_name=first_name,
            last_name=last_name,
            email_address=email_address,
            created_at=created_at or timezone.now(),
            **columns,
        )
        payload = user_payload(user)
        transaction.on_commit(partial(_after_write, payload, events.user_created))
    logger.info("user %s created", user.id)
    return user


def user_update(*, user: User, fields: dict) -> User:
    """Change a user's fields (admin/API); the edit becomes the newest state of the row."""
    for name, value in fields.items():
        setattr(user, name, value)
    # Detach the row from ingest ordering: a manual edit is not tied to a file line.
    user.source_run_id = None
    user.source_line = None
    with transaction.atomic():
        user.save()
        payload = user_payload(user)
        transaction.on_commit(partial(_after_write, payload, events.user_updated))
    logger.info("user %s updated", user.id)
    return user


def _after_write(payload: dict, send_event) -> None:
    if not cache.cache_user(payload):
        _remember_stale([payload["id"]])
    send_event(payload)


def user_delete(*, user_id: int) -> bool:
    """Delete a user; return False when there was none."""
    with transaction.atomic():
        deleted, _ = User.objects.filter(id=user_id).delete()
        if deleted:
            transaction.on_commit(partial(_after_delete, user_id))
    if deleted:
        logger.info("user %s deleted", user_id)
    else:
        transaction.on_commit(partial(_forget_missing, user_id))
    return bool(deleted)


def _forget_missing(user_id: int) -> None:
    """A delete found no row: drop whatever Redis still holds for it (an entry a write left
    while Redis failed, a fill from before leases), so a 404 never leaves the user readable."""
    cache.forget_users([user_id])


def _after_delete(user_id: int) -> None:
    if not cache.forget_users([user_id]):
        _remember_stale([user_id])
    if not events.user_deleted(user_id):
        _remember_unredacted(user_id)
    elif _redactions_noted:
        stream_redactions_apply()


# --- Keeping Redis coherent through Redis outages ----------------------------------------------
# A write that commits while Redis is unreachable may leave an older entry there (an update,
# a delete). Its id is remembered in PostgreSQL and the entry deleted once Redis answers again:
# by every ingest batch before it starts, or by `manage.py repair_cache`.


def _remember_stale(user_ids: list[int]) -> None:
    try:
        StaleCacheEntry.objects.bulk_create(
            [StaleCacheEntry(user_id=user_id) for user_id in user_ids], ignore_conflicts=True
        )
    except DatabaseError:
        logger.exception("cache: could not note %d stale entries", len(user_ids))
        return
    logger.warning(
        "cache: %d users may be stale in Redis; they are deleted once Redis answers",
        len(user_ids),
    )


def cache_repair_stale(*, chunk: int = 10_000) -> tuple[int, int]:
    """Delete the Redis entries of users noted stale; return how many were deleted and how
    many are left (all of them while Redis is still down)."""
    repaired = 0
    while user_ids := list(StaleCacheEntry.objects.values_list("user_id", flat=True)[:chunk]):
        if not cache.forget_users(user_ids):
            break
        # A note made again meanwhile is about a write that reached Redis before this delete,
        # or failed to: either way nothing older than PostgreSQL is left.
        StaleCacheEntry.objects.filter(user_id__in=user_ids).delete()
        repaired += len(user_ids)
    if repaired:
        logger.info("cache: deleted %d stale entries", repaired)
    left = StaleCacheEntry.objects.count() if user_ids else 0
    return repaired, left


# --- Keeping deleted users out of the stream's history through Redis outages ------------------
# A delete whose user.deleted event could not reach the history (users.stream) leaves the user in
# older events there, which replays would send. Its id is noted in PostgreSQL and the event sent
# late once Redis answers: by every ingest batch before it starts, by `manage.py repair_cache`,
# and by the next delete of this process that reaches the history.

_redactions_noted = False  # this process noted one: its next delete that reaches Redis applies


def _remember_unredacted(user_id: int) -> None:
    global _redactions_noted
    try:
        PendingStreamRedaction.objects.bulk_create(
            [PendingStreamRedaction(user_id=user_id)], ignore_conflicts=True
        )
    except DatabaseError:
        logger.exception("events: could not note user %s for redaction from the stream", user_id)
        return
    _redactions_noted = True
    logger.warning("events: user %s stays in the stream's history until Redis answers", user_id)


def stream_redactions_apply(*, chunk: int = 1000) -> tuple[int, int]:
    """Send the user.deleted events a stream outage held back, so replays leave those users
    out; return how many were sent and how many are left (all while Redis is still down). A
    user created again since (same id) is sent after its delete as user.updated, its current
    state, so replays still end with it."""
    global _redactions_noted
    sent = 0
    while notes := list(PendingStreamRedaction.objects.order_by("noted_at")[:chunk]):
        for note in notes:
            if not events.user_deleted(note.user_id):
                return sent, PendingStreamRedaction.objects.count()
            user = User.objects.filter(id=note.user_id).first()
            if user is not None:
                events.user_updated(user_payload(user))
            # A note made again meanwhile is of a delete this event covers as well.
            PendingStreamRedaction.objects.filter(user_id=note.user_id).delete()
            sent += 1
    _redactions_noted = False
    if sent:
        logger.info("events: sent %d held-back user.deleted events", sent)
    return sent, 0


# --- API clients and their tokens (users.access) -----------------------------------------------


def roles_ensure() -> None:
    """Create the `reader` and `writer` groups with their permissions, or restore them
    (idempotent: runs after every migrate, and before an API client is given a role)."""
    from django.contrib.auth.models import Permission

    for name, actions in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(
            Permission.objects.filter(
                content_type__app_label="users", codename__in=[f"{a}_user" for a in actions]
            )
        )


def api_client_create(*, name: str, role: str, expires_days: int | None) -> tuple[Any, str]:
    """Create an API account in a role's group (or move an existing one there) and give it a
    new token; return the account and the token, which is stored only as a digest."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    with transaction.atomic():
        account, created = get_user_model().objects.get_or_create(username=name)
        if created:
            account.set_unusable_password()  # tokens only; no admin login
            account.save(update_fields=["password"])
        else:
            _api_client_account_check(account)
        if not Group.objects.filter(name=role).exists():
            roles_ensure()
        account.groups.set([Group.objects.get(name=role)])
        token = api_token_create(account=account, label=f"{role} client", expires_days=expires_days)
    logger.info("api client %s (%s) %s; new token %s…", name, role,
                "created" if created else "updated", token[:8])  # fmt: skip
    return account, token


class ApiClientRefused(ValueError):
    """The account named for an API client is a person's (staff, superuser or with a password)."""


def _api_client_account_check(account) -> None:
    """Refuse to make a person's account an API client. A token acts with its account's
    permissions (users.access: one rule for every path), and the role replaces the account's
    groups: a `reader` token of a superuser would read, write and delete, and the person would
    lose their groups. API clients are accounts of their own, made by api_client_create."""
    if account.is_superuser or account.is_staff or account.has_usable_password():
        kind = (
            "a superuser" if account.is_superuser
            else "a staff account" if account.is_staff
            else "an account with a password"
        )  # fmt: skip
        raise ApiClientRefused(
            f"{account.get_username()!r} is {kind}, not an API client: a token would carry all "
            "its rights and the role would replace its groups; choose a new name"
        )


def api_token_create(*, account, label: str = "", expires_days: int | None = None) -> str:
    """Make a token for an account; return it (the only time it exists outside the client).
    `expires_days`: None for settings.API_TOKEN_EXPIRES_DAYS, 0 for no expiry."""
    if expires_days is None:
        expires_days = settings.API_TOKEN_EXPIRES_DAYS
    if expires_days < 0:
        raise ValueError("expires_days must be 0 (never) or more")
    token = new_token()
    ApiToken.objects.create(
        account=account,
        digest=token_digest(token),
        prefix=token[:10],
        label=label,
        expires_at=timezone.now() + timedelta(days=expires_days) if expires_days else None,
    )
    return token


def api_tokens_revoke(*, name: str, prefix: str | None = None) -> int:
    """Revoke an account's tokens (those starting with `prefix`, or all); return how many."""
    tokens = ApiToken.objects.filter(account__username=name)
    if prefix:
        tokens = tokens.filter(prefix__startswith=prefix[:10])
    digests = list(tokens.values_list("digest", flat=True))
    tokens.delete()  # the post_delete signal drops their cached principals (users.signals)
    if digests:
        logger.info("api client %s: %d token(s) revoked", name, len(digests))
    return len(digests)


def principals_forget(*, account_ids: Iterable[int]) -> None:
    """Drop the cached principals of these accounts' tokens (their permissions changed), and
    have their open streams check them again."""
    account_ids = list(account_ids)
    digests = ApiToken.objects.filter(account_id__in=account_ids).values_list("digest", flat=True)
    cache.forget_principals(list(digests))
    events.principals_changed(account_ids)


def token_principals_forget(*, digests: Sequence[str], account_ids: Iterable[int]) -> None:
    """Drop the cached principals of deleted tokens, and end the streams they opened."""
    cache.forget_principals(digests)
    events.principals_changed(account_ids)


def sessions_ended(*, account_ids: Iterable[int]) -> None:
    """Have the streams of accounts whose session ended (a logout) check their client again."""
    events.principals_changed(account_ids)
