"""The one JSON shape of a user, used by the API, the Redis cache and the SSE stream."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from orjson import OPT_UTC_Z, JSONEncodeError
from orjson import dumps as _dumps

from users.columns import TIMESTAMP_COLUMNS, USER_COLUMNS, UserRow

# A User, or an ingest UserRow: anything with the attributes of users.columns.USER_COLUMNS.
UserLike = Any


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z suffix, as Django REST framework renders datetimes."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def user_payload(user: UserLike) -> dict[str, Any]:
    """Serialize a User (or an ingest UserRow: same attributes) to plain JSON-ready data."""
    return {
        name: iso_utc(getattr(user, name)) if name in TIMESTAMP_COLUMNS else getattr(user, name)
        for name in USER_COLUMNS
    }


# One encoder, built once: json.dumps with non-default options builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _escape_line_separators(text: str) -> str:
    # DRF's JSONRenderer escapes these two (JSON allows them raw, older JavaScript does not);
    # so do we, or a name holding one would differ between the API's paths.
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def to_json(data: Any) -> str:
    """Compact JSON text, byte for byte what DRF's JSONRenderer writes for the same data: the
    one encoding of the API (either path), the cache and the stream."""
    text = _encode(data)
    return text if text.isascii() else _escape_line_separators(text)


_LINE_SEPARATORS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))
# Between two users in orjson's text of a list of them. It cannot occur inside a value: a quote
# inside a JSON string is always escaped.
_BETWEEN_USERS = b'},{"%s":' % USER_COLUMNS[0].encode()


def users_json(users: Sequence[UserRow]) -> list[bytes]:
    """`to_json(user_payload(user)).encode()` of each ingest UserRow (timestamps in UTC, as
    users.validation makes them), written by orjson for the whole batch at once: ingest
    encodes every row it stores, for the cache and the stream, and orjson costs ~1.2 us per
    call but ~0.2 us per user of one list (the standard encoder: ~1.5 us per user). The list's
    text is cut back into users. The bytes are the same (tests/users/test_payloads.py): orjson
    writes datetimes as isoformat() does, with Z for UTC, and escapes what the json module
    escapes but the two line separators, escaped here."""
    try:
        return _orjson_users(users)
    except JSONEncodeError:  # what orjson refuses (lone surrogates): one at a time
        return [_user_json(user) for user in users]


def _user_json(user: UserRow) -> bytes:
    try:
        return _orjson_users([user])[0]
    except JSONEncodeError:
        return to_json(user_payload(user)).encode("utf-8", "surrogatepass")


def _orjson_users(users: Sequence[UserRow]) -> list[bytes]:
    if not users:
        return []
    payloads = [dict(zip(USER_COLUMNS, user)) for user in users]  # noqa: B905 - UserRows
    data = _dumps(payloads, option=OPT_UTC_Z)
    if not data.isascii():
        for raw, escaped in _LINE_SEPARATORS:
            data = data.replace(raw, escaped)
    first, *rest = data[1:-2].split(_BETWEEN_USERS)  # without "[" and "}]"
    head = _BETWEEN_USERS[2:]  # {"id":
    return [first + b"}", *[head + part + b"}" for part in rest]]
