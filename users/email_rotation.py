"""Rewriting the stored email columns in batches, while the service serves: the migration that
encrypts a plaintext table (users 0008) and its way back, and `manage.py rotate_email_keys`.

Each batch is the next `size` users by id, read and rewritten in one short transaction; a row
is rewritten only if its stored address is still the one read (compare and set), so a write
that lands meanwhile wins, already under the current keys. Rows already as wanted are skipped,
so a pass interrupted anywhere is resumed by running it again (or from the id it printed).
Raw SQL on the table's columns, so the migrations can run it whatever the model becomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from users.crypto import TOKEN_VERSION, email_decrypt, email_encrypt, is_token, token_key_id
from users.email_index import email_index_values

# Other stores of tokens under the encryption keys (ingest's failed batches): each a function
# that re-encrypts its tokens under the current key and returns (what they are, how many it
# rewrote, how many are left under keys the ring no longer holds); registered by their apps
# (ingest.apps), which users may not import.
token_holders: list[Callable[[], tuple[str, int, int]]] = []

_SELECT = """
SELECT id, email_address, email_index_key, email_ngrams IS NOT NULL
FROM users_user WHERE id > %s ORDER BY id LIMIT %s
"""
_UPDATE = """
UPDATE users_user AS u
SET email_address = v.new, email_digest = v.digest, email_ngrams = v.ngrams::int4[],
    email_index_key = v.index_key
FROM unnest(%s::int8[], %s::text[], %s::text[], %s::bytea[], %s::text[], %s::text[])
    AS v(id, old, new, digest, ngrams, index_key)
WHERE u.id = v.id AND u.email_address = v.old
"""


@dataclass
class Batch:
    last_id: int | None  # None: the table ends here
    examined: int
    rewritten: int


def _wanted_for_rotation(token: str, index_key: str | None, has_ngrams: bool) -> tuple[bool, bool]:
    """(re-encrypt, re-index) for a stored value under the current settings."""
    current_key = settings.EMAIL_ENCRYPTION_KEYS[0][0]
    current_index = settings.EMAIL_BLIND_INDEX_KEYS[0][0]
    encrypt = not is_token(token) or token_key_id(token) != current_key
    reindex = (
        encrypt or index_key != current_index or has_ngrams != bool(settings.EMAIL_SUBSTRING_SEARCH)
    )
    return encrypt, reindex


def _ngrams_literal(ngrams: list[int] | None) -> str | None:
    return None if ngrams is None else "{" + ",".join(map(str, ngrams)) + "}"


def emails_rewrite_batch(*, after_id: int, size: int, decrypt: bool = False) -> Batch:
    """The next `size` users after `after_id`: addresses not under the current encryption key,
    or indexes not under the current blind-index key, rewritten (plaintext ones encrypted).
    `decrypt`: the way back, every token turned into its plaintext and the indexes emptied."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_SELECT, [after_id, size])
        rows = cursor.fetchall()
        columns: tuple[list, ...] = ([], [], [], [], [], [])
        for user_id, stored, index_key, has_ngrams in rows:
            if decrypt:
                if not is_token(stored):
                    continue
                new, digest, ngrams, new_index_key = email_decrypt(stored), None, None, None
            else:
                encrypt, reindex = _wanted_for_rotation(stored, index_key, has_ngrams)
                if not reindex:
                    continue
                address = email_decrypt(stored) if is_token(stored) else stored
                new = email_encrypt(address) if encrypt else stored
                digest, ngrams, new_index_key = email_index_values(address)
            for column, value in zip(
                columns,
                (user_id, stored, new, digest, _ngrams_literal(ngrams), new_index_key),
                strict=True,
            ):
                column.append(value)
        if columns[0]:
            cursor.execute(_UPDATE, list(columns))
            rewritten = cursor.rowcount
        else:
            rewritten = 0
    last_id = rows[-1][0] if len(rows) == size else None
    return Batch(last_id=last_id, examined=len(rows), rewritten=rewritten)


def emails_rewrite(
    *, after_id: int = 0, size: int = 2000, decrypt: bool = False
) -> Iterator[Batch]:
    """emails_rewrite_batch over the whole table from `after_id`, one batch at a time."""
    while True:
        batch = emails_rewrite_batch(after_id=after_id, size=size, decrypt=decrypt)
        yield batch
        if batch.last_id is None:
            return
        after_id = batch.last_id


def emails_left_under_other_keys() -> dict[str, int]:
    """How many stored addresses are under each encryption key but the current one, with
    "plaintext" for unencrypted ones and "index:<id>" for indexes under an older blind-index
    key: what must be zero before an old key leaves its ring. One pass over the table."""
    current_key = settings.EMAIL_ENCRYPTION_KEYS[0][0]
    current_index = settings.EMAIL_BLIND_INDEX_KEYS[0][0]
    prefix = f"{TOKEN_VERSION}."
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT CASE WHEN strpos(email_address, '@') > 0 THEN 'plaintext'
                        ELSE split_part(email_address, '.', 2) END AS key_id, count(*)
            FROM users_user
            WHERE NOT (starts_with(email_address, %s) AND strpos(email_address, '@') = 0)
            GROUP BY 1
            UNION ALL
            SELECT 'index:' || coalesce(email_index_key, 'none'), count(*)
            FROM users_user WHERE email_index_key IS DISTINCT FROM %s GROUP BY 1
            """,
            [f"{prefix}{current_key}.", current_index],
        )
        return dict(cursor.fetchall())
