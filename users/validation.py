"""Field rules for a user, shared by every way a user enters the system (CSV ingest and the API),
and a CSV row's validation built from them (`parse_row`, with the common row checked in one go):
a rule changes here, in one module.

Pure functions: no ORM, no settings. Each field rule raises `FieldError(column, message)` on bad
input and returns the normalised value otherwise; `parse_row` raises `RowRejected`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.validators import EmailValidator

from users.columns import USER_COLUMNS, UserRow

NAME_MAX_LENGTH = 255
EMAIL_MAX_LENGTH = 254  # RFC 5321 path limit
# Ids from this value up are handed out by the API (a PostgreSQL sequence starts here), so an
# API-created user can never collide with an imported one, whatever order the two happen in.
# It stays below 2**53 so JavaScript clients read every id exactly.
API_ID_START = 10**15
MAX_IMPORTED_ID = API_ID_START - 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_from_timestamp = datetime.fromtimestamp


class _EmailValidator(EmailValidator):
    # Django's patterns sit behind a lazy proxy that costs a Python call on every use, which
    # shows when validating half a million rows; compile the same patterns once instead. The
    # domain's on first use: compiling it takes ~60 ms, which every process would pay at start
    # (each manage.py command, each worker), and domains are checked once each (normal_domain).
    user_regex = re.compile(EmailValidator.user_regex.pattern, EmailValidator.user_regex.flags)
    literal_regex = re.compile(
        EmailValidator.literal_regex.pattern, EmailValidator.literal_regex.flags
    )

    @functools.cached_property
    def domain_regex(self) -> re.Pattern:
        return re.compile(EmailValidator.domain_regex.pattern, EmailValidator.domain_regex.flags)


_email_validator = _EmailValidator()
# The same local-part rule for ASCII text without IGNORECASE (case-insensitive matching costs
# about a microsecond per address): "A-Z" becomes "A-Za-z". Other text keeps Django's pattern,
# under which a few non-ASCII letters (U+0130, U+0131, U+017F, U+212A) fold into A-Z.
ascii_local_part = re.compile(
    EmailValidator.user_regex.pattern.replace("0-9A-Z", "0-9A-Za-z"),
    EmailValidator.user_regex.flags & ~re.IGNORECASE,
).match


def _valid_local_part(local: str) -> bool:
    if local.isascii():
        return ascii_local_part(local) is not None
    return _email_validator.user_regex.match(local) is not None


# A file repeats a few thousand domains across its rows: check and lower-case each one once.
@functools.lru_cache(maxsize=16384)
def normal_domain(domain_part: str) -> str | None:
    """The domain lower-cased, or None where Django's EmailValidator refuses it."""
    if domain_part in _email_validator.domain_allowlist or _email_validator.validate_domain_part(
        domain_part
    ):
        return domain_part.lower()
    return None


@dataclass(frozen=True, slots=True)
class FieldError(Exception):
    """A value that breaks a rule; `column` names the CSV column / API field."""

    column: str
    message: str

    def __str__(self) -> str:
        return f"{self.column}: {self.message}"


# C0 and C1 control characters and DEL (PostgreSQL refuses NUL in text outright), and lone
# surrogates (not text: they cannot be encoded as UTF-8).
control_character = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]").search


def clean_name(value: str, *, column: str) -> str:
    """A first or last name: trimmed, not blank, at most NAME_MAX_LENGTH characters, no
    control characters."""
    value = value.strip()
    if not value:
        raise FieldError(column, "must not be blank")
    if len(value) > NAME_MAX_LENGTH:
        raise FieldError(column, f"longer than {NAME_MAX_LENGTH} characters ({len(value)})")
    # Printable ASCII (most names) holds no control character: skip the search.
    if not (value.isascii() and value.isprintable()) and (control := control_character(value)):
        raise FieldError(column, f"contains a control character (U+{ord(control[0]):04X})")
    return value


def clean_email(value: str, *, column: str = "email_address") -> str:
    """Validate an address and lower-case its domain (the local part is case-sensitive)."""
    value = value.strip()
    if not value:
        raise FieldError(column, "is required")
    if len(value) > EMAIL_MAX_LENGTH:  # cheap, and spares the checks below a long value
        raise FieldError(column, f"longer than {EMAIL_MAX_LENGTH} characters ({len(value)})")
    # EmailValidator's own checks, in the order it makes them, without its exception and
    # second split per row (tests/users/test_validation.py compares the two).
    local, at, domain = value.rpartition("@")
    domain = normal_domain(domain) if at and _valid_local_part(local) else None
    if domain is None:
        raise FieldError(column, f"not a valid email address: {value!r}")
    cleaned = f"{local}@{domain}"
    # The limit holds for what is stored: lower-casing can lengthen a domain ("İ" becomes
    # "i̇", two code points), and an address over the column's length fails the whole COPY.
    if len(cleaned) > EMAIL_MAX_LENGTH:
        raise FieldError(
            column, f"longer than {EMAIL_MAX_LENGTH} characters once normalised ({len(cleaned)})"
        )
    return cleaned


# What a PostgreSQL bigint holds: ids and parent ids beyond it could not be stored or looked up.
BIGINT_MAX = 2**63 - 1

# int() alone would also accept "1_000", "١٢" and " 12 "; the contract is plain decimal digits.
_is_integer = re.compile(r"[+-]?[0-9]+\Z").match
# Longer than any bigint (and int() refuses strings of over 4,300 digits outright).
_MAX_INTEGER_CHARS = 20


def plain_digits(value: str) -> bool:
    """Whether `value` is ASCII digits alone, short enough for int(): the common form of an
    integer, which needs no pattern match (the range is still the caller's to check)."""
    return value.isdigit() and value.isascii() and len(value) <= _MAX_INTEGER_CHARS


def parse_int(value: str, *, column: str) -> int:
    value = value.strip()
    if plain_digits(value):
        return int(value)
    if not _is_integer(value):
        raise FieldError(column, f"not an integer: {_shown(value)}")
    if len(value.lstrip("+-").lstrip("0")) > _MAX_INTEGER_CHARS:
        raise FieldError(column, f"integer out of range: {_shown(value)}")
    return int(value)


def _shown(value: str, limit: int = 40) -> str:
    """A value quoted for a message, cut short: messages stay one short line."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"


def utc_datetime(value: datetime, *, column: str) -> datetime:
    """The same instant in UTC (naive values are taken as UTC), or FieldError when it falls
    outside years 1-9999 in UTC. PostgreSQL refuses offsets beyond ±15:59 and Python cannot
    convert 9999-12-31T23:59-01:00 to UTC, so every timestamp is made UTC before it is used."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise FieldError(column, "out of range (years 1 to 9999, in UTC)") from None


def parse_user_id(value: str, *, column: str = "id") -> int:
    if not value.strip():
        raise FieldError(column, "is required")
    number = parse_int(value, column=column)
    if number <= 0:
        raise FieldError(column, f"not a positive integer: {number}")
    if number > MAX_IMPORTED_ID:
        raise FieldError(column, f"above {MAX_IMPORTED_ID} (ids from {API_ID_START} are the API's)")
    return number


def quick_epoch_ms(ms: int) -> datetime | None:
    """`epoch_ms_to_datetime(ms)` the quick way, or None where it cannot be sure.

    fromtimestamp() on a float is about twice as fast as adding a timedelta; far from 1970 the
    float can miss the millisecond, which shows as microseconds that are not whole
    milliseconds: then (and outside its range) the exact sum must decide."""
    try:
        value = _from_timestamp(ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return None
    return None if value.microsecond % 1000 else value


def epoch_ms_to_datetime(ms: int, *, column: str) -> datetime:
    value = quick_epoch_ms(ms)
    if value is not None:
        return value
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise FieldError(column, f"timestamp out of range: {ms}") from None


def parse_required_timestamp(value: str, *, column: str) -> datetime:
    value = value.strip()
    if not value or value == "-1":
        raise FieldError(column, "is required")
    return epoch_ms_to_datetime(parse_int(value, column=column), column=column)


def parse_optional_timestamp(value: str, *, column: str) -> datetime | None:
    value = value.strip()
    if not value or value == "-1":
        return None
    return epoch_ms_to_datetime(parse_int(value, column=column), column=column)


def parse_optional_user_id(value: str, *, column: str) -> int | None:
    value = value.strip()
    if not value or value == "-1":
        return None
    number = parse_int(value, column=column)
    if number <= 0:
        raise FieldError(column, f"not a positive integer: {number}")
    if number > BIGINT_MAX:
        raise FieldError(column, f"integer out of range: {number}")
    return number


# --- A CSV row ------------------------------------------------------------------------------
# Raw field values arrive in USER_COLUMNS order, whatever the order of the file's columns.
Fields = Sequence[str]


@dataclass(frozen=True, slots=True)
class RowRejected(Exception):
    reason: str


# Each column's own rule, by position in USER_COLUMNS (the one place they truly differ).
_ID, _FIRST, _LAST, _EMAIL, _CREATED, _DELETED, _MERGED, _PARENT = USER_COLUMNS
# UserRow(...) goes through a generated Python __new__; the tuple's own is a C call (one row
# per line of the file).
_new_row = tuple.__new__


def parse_row(fields: Fields) -> UserRow:
    """Validate and normalise one record's COLUMNS values."""
    return _plain_row(fields) or parse_row_by_rules(fields)


def parse_row_by_rules(fields: Fields) -> UserRow:
    """parse_row, one field rule at a time (what `_plain_row` must agree with)."""
    try:
        return _new_row(
            UserRow,
            (
                parse_user_id(fields[0]),
                clean_name(fields[1], column=_FIRST),
                clean_name(fields[2], column=_LAST),
                clean_email(fields[3]),
                parse_required_timestamp(fields[4], column=_CREATED),
                parse_optional_timestamp(fields[5], column=_DELETED),
                parse_optional_timestamp(fields[6], column=_MERGED),
                parse_optional_user_id(fields[7], column=_PARENT),
            ),
        )
    except FieldError as error:
        raise RowRejected(str(error)) from None


# --- The common row, checked in one go ------------------------------------------------------
# Ingest validates every row it stores: the field rules above, one call per value, are most of
# a worker's CPU per row. Almost every row holds plain values — ASCII digits and addresses,
# names without control characters, -1 for none — and `_plain_row` checks those inline,
# returning exactly what the rules would (tests/ingest/test_parsing.py compares the two on
# generated rows).
# Anything else (spaces around a value, other scripts, signs, bad values) returns None and
# goes through the rules, which accept it or say why not.
_NONE_VALUES = ("-1", "")
_UNSURE = object()


def _plain_row(fields: Fields) -> UserRow | None:
    id_text, first, last, email, created, deleted, merged, parent = fields
    if not plain_digits(id_text):
        return None
    user_id = int(id_text)
    first, last, email = first.strip(), last.strip(), email.strip()
    if not (
        0 < user_id <= MAX_IMPORTED_ID
        and 0 < len(first) <= NAME_MAX_LENGTH
        and 0 < len(last) <= NAME_MAX_LENGTH
        and len(email) <= EMAIL_MAX_LENGTH
        and email.isascii()
        # Printable ASCII holds no control character; other text is searched for one.
        and (first.isascii() and first.isprintable() or not control_character(first))
        and (last.isascii() and last.isprintable() or not control_character(last))
    ):
        return None
    local, at, domain = email.rpartition("@")
    domain = normal_domain(domain) if at and ascii_local_part(local) else None
    if domain is None:
        return None
    created_time = _plain_time(created)
    deleted_time = None if deleted in _NONE_VALUES else _plain_time(deleted)
    merged_time = None if merged in _NONE_VALUES else _plain_time(merged)
    if parent in _NONE_VALUES:
        parent_id = None
    elif plain_digits(parent):
        parent_id = int(parent)
        if not 0 < parent_id <= BIGINT_MAX:
            return None
    else:
        return None
    if _UNSURE in (created_time, deleted_time, merged_time):
        return None
    return _new_row(
        UserRow,
        (
            user_id,
            first,
            last,
            f"{local}@{domain}",
            created_time,
            deleted_time,
            merged_time,
            parent_id,
        ),
    )


def _plain_time(text: str):
    """Epoch milliseconds in plain digits as a datetime, or _UNSURE."""
    if not plain_digits(text):
        return _UNSURE
    value = quick_epoch_ms(int(text))
    return _UNSURE if value is None else value
