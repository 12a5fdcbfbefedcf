"""The one JSON shape of a user, used by the API, the Redis cache and the SSE stream."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from users.columns import COLUMN_TYPES, NULLABLE_COLUMNS, TIMESTAMP_COLUMNS, USER_COLUMNS

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


# The C string encoder that json uses when ensure_ascii is off.
_encode_basestring = json.encoder.encode_basestring


def _json_time(value: datetime | None) -> str:
    if value is None:
        return "null"
    text = value.isoformat()  # as iso_utc(), inlined: this runs three times per row
    return f'"{text[:-6]}Z"' if text.endswith("+00:00") else f'"{text}"'


def _user_json_writer():
    """Write `user_json` out for the columns of users.columns, once, at import: one f-string with
    a direct encoder per column is several times faster than to_json(user_payload(user)), and
    ingest encodes every row it stores (for the cache and the stream). The text is the same:
    the line separators to_json escapes can only sit inside strings, so the whole text is
    checked for them once."""
    encoders = {str: "_encode_basestring({})", datetime: "_json_time({})", int: "{}"}

    def encoder(name: str) -> str:
        encode = encoders[COLUMN_TYPES[name]]  # an int is its own JSON
        if name in NULLABLE_COLUMNS:
            return f'"null" if (v := user.{name}) is None else {encode.format("v")}'
        return encode.format(f"user.{name}")

    parts = [f'"{name}":{{{encoder(name)}}}' for name in USER_COLUMNS]
    source = (
        "def user_json(user):\n"
        f"    text = f'{{{{{','.join(parts)}}}}}'\n"
        "    return text if text.isascii() else _escape_line_separators(text)\n"
    )
    namespace = {
        "_encode_basestring": _encode_basestring,
        "_json_time": _json_time,
        "_escape_line_separators": _escape_line_separators,
    }
    exec(source, namespace)  # noqa: S102 - source built above from constants
    return namespace["user_json"]


user_json = _user_json_writer()
user_json.__doc__ = "`to_json(user_payload(user))`, written out directly (the same text)."
