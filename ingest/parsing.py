"""Reading a users CSV: bytes in, numbered records (or the line's structural problem) out.

Pure: no ORM, no settings. The producer uses `read_records` to split a file into numbered
records (catching structural problems: wrong field count, bad UTF-8, broken quoting); the worker
turns a record's fields into a `UserRow`, or a `RowRejected` naming the column, with
users.validation.parse_row, beside the field rules it applies.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import BinaryIO, NamedTuple

from users.columns import USER_COLUMNS

# The file's columns are found by these names, in any order (users.columns declares them).
COLUMNS = USER_COLUMNS
# A users row is well under 2 KB. A longer line (a binary file, a runaway field) is rejected
# without ever being held whole in memory, so the producer's memory stays flat whatever the input.
MAX_LINE_BYTES = 1 << 20
# Rejected lines are reported and stored with at most this many characters.
RAW_PREVIEW_CHARS = 1000


class CsvFileError(Exception):
    """The file as a whole cannot be used (no header, missing columns, not text)."""


class Record(NamedTuple):
    """One data record of the file: its line (1-based, the header is line 1).

    A NamedTuple rather than a dataclass: the producer makes one per row, and tuples are cheap.
    """

    line: int
    fields: tuple[str, ...] | None  # the COLUMNS values, None when rejected
    reason: str | None = None
    raw: str | None = None
    size: int = 0  # characters of the line (lets the producer bound a batch's bytes)


# Record(...) goes through a generated Python __new__; the tuple's own is a C call (one record
# per line of the file).
_new_record = tuple.__new__


# --- Addresses kept out of rejects ---------------------------------------------------------
# A rejected row is stored (RejectedRow) and reported with its line redacted, not encrypted:
# every value holding an "@" (the email field, or an address that slid into another column) is
# replaced by REDACTED. Values without one cannot be an address and stay, so a reject still
# shows what was wrong ("not-an-email"). `publish_csv --report-include-addresses` reads the
# original lines from the file again (ingest.reports). docs/security.md, "Email addresses at
# rest".
REDACTED = "[redacted]"
_EMAIL = USER_COLUMNS.index("email_address")
# An address within free text: the run of characters around an "@" up to a separator.
_ADDRESS_LIKE = re.compile(r"""[^\s,;<>()\[\]{}"]*@[^\s,;<>()\[\]{}"]*""")


def redact_addresses(text: str) -> str:
    """`text` with every run of characters around an "@" replaced by REDACTED."""
    return _ADDRESS_LIKE.sub(REDACTED, text) if "@" in text else text


def redacted_line(fields: Sequence[str]) -> str:
    """A rejected record's COLUMNS values as its report line (to_csv_line), addresses redacted."""
    return to_csv_line(
        [REDACTED if "@" in value else value for value in fields]
        if any("@" in value for value in fields)
        else fields
    )


def redacted_reason(reason: str, fields: Sequence[str] | None = None) -> str:
    """A reject's reason without the addresses it may quote (the email field's value, as the
    field rules quote it, then anything else around an "@")."""
    if "@" not in reason:
        return reason
    if fields is not None and len(fields) > _EMAIL and "@" in (value := fields[_EMAIL].strip()):
        reason = reason.replace(repr(value), repr(REDACTED)).replace(value, REDACTED)
    return redact_addresses(reason)


def to_csv_line(fields: Sequence[str]) -> str:
    """Render fields back as one CSV line, for reports of rejected rows."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return preview(out.getvalue())


def _column_positions(header: list[str]) -> list[int]:
    """Where each of COLUMNS sits in the file's header."""
    names = [name.strip().lower() for name in header]
    missing = [column for column in COLUMNS if column not in names]
    if missing:
        found = ",".join(header)
        raise CsvFileError(
            f"line 1: missing required column(s): {', '.join(missing)} (header: {found!r})"
        )
    return [names.index(column) for column in COLUMNS]


def _is_utf8(text: str) -> bool:
    # Undecodable bytes arrive as lone surrogates (errors="surrogateescape"), which cannot be
    # encoded back to UTF-8; the ASCII fast path keeps this cheap for ordinary rows.
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _readable(line: str) -> str:
    """The line as readable text, undecodable bytes shown as U+FFFD."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _printable(line: str) -> str:
    return preview(_readable(line))


def preview(text: str) -> str:
    """Text for a reject report: whole, or its first RAW_PREVIEW_CHARS and how much is left."""
    if len(text) <= RAW_PREVIEW_CHARS:
        return text
    return f"{text[:RAW_PREVIEW_CHARS]}… ({len(text) - RAW_PREVIEW_CHARS} more characters)"


def _split_line(line: str) -> list[str]:
    # Most lines hold no quotes: a plain split is several times faster than the csv module.
    if '"' not in line:
        return line.split(",")
    return next(csv.reader((line,), strict=True))


# Whitespace as str.strip() sees it, in ASCII (bytes.strip() alone misses \x1c-\x1f).
_ASCII_SPACE = bytes(c for c in range(128) if chr(c).isspace())


class DataLineCounter:
    """Counts the data lines of a file fed to it in chunks, as read_records will see them:
    lines holding more than whitespace (blank lines are skipped), the header excepted, a line
    over MAX_LINE_BYTES included (it is rejected, but it is a record). Memory stays flat: a
    partial line is kept only up to MAX_LINE_BYTES."""

    def __init__(self) -> None:
        self.lines = 0  # lines holding more than whitespace, the header included
        self._partial = b""
        self._long = False  # in a line over MAX_LINE_BYTES (already counted)
        self._first_line = True

    def feed(self, chunk: bytes) -> None:
        if self._long:  # the rest of a long line, counted already
            cut = chunk.find(b"\n")
            if cut < 0:
                return
            self._long, chunk = False, chunk[cut + 1 :]
        data = self._partial + chunk if self._partial else chunk
        end = data.rfind(b"\n")
        if end >= 0:
            self._partial = data[end + 1 :]
            first_end = data.find(b"\n")
            self.lines += _is_record(self._first(data[:first_end]))
            self._first_line = False
            # Every later line that starts with printable ASCII is a record (a data row starts
            # with its id); only the others (blank lines, mostly) are looked at one by one.
            later = data.count(b"\n", first_end, end)
            for match in _UNSURE_LINE_START.finditer(data, first_end, end + 1):
                start = match.end()
                later -= not _is_record(data[start : data.find(b"\n", start)])
            self.lines += later
        else:
            self._partial = data
        if len(self._partial) > MAX_LINE_BYTES:
            self.lines += 1
            self._partial, self._long, self._first_line = b"", True, False

    def _first(self, line: bytes) -> bytes:
        """The file's first line without its byte order mark (the reader drops it)."""
        return line.removeprefix(codecs.BOM_UTF8) if self._first_line else line

    @property
    def data_lines(self) -> int:
        """Once the whole file is fed: its data lines (the header excepted)."""
        last = not self._long and _is_record(self._first(self._partial))
        return max(self.lines + last - 1, 0)


# A newline followed by anything but a printable ASCII character (what may start a blank line).
_UNSURE_LINE_START = re.compile(rb"\n(?=[^\x21-\x7e])")


def _is_record(line: bytes) -> bool:
    """Whether read_records makes a record of this line (without its newline)."""
    if len(line) > MAX_LINE_BYTES:
        return True  # rejected for its length, whatever it holds
    stripped = line.strip(_ASCII_SPACE)
    # A data line starts with an ASCII character; anything else is decoded, as the reader does.
    return bool(stripped) and (
        stripped[0] < 0x80 or bool(line.decode("utf-8", "surrogateescape").strip())
    )


def read_records(stream: BinaryIO) -> Iterator[Record]:
    """Read the header now (CsvFileError if the file is unusable) and return the data records.

    Streams: memory does not grow with the file. Blank lines are skipped. Each physical line is
    one record: a quoted field may not span lines, so one stray quote can never swallow the good
    lines after it (that line alone is rejected).
    """
    lines = _lines(stream)
    first = next(((n, line, whole) for n, line, whole in lines if line.strip()), None)
    if first is None:
        raise CsvFileError("empty file: no header line")
    number, header_line, whole = first
    if not whole:
        raise CsvFileError(f"line {number}: longer than {MAX_LINE_BYTES} bytes: not a CSV header")
    try:
        header = _split_line(header_line.rstrip("\r\n"))
    except csv.Error as error:
        raise CsvFileError(f"line {number}: not a CSV header: {error}") from None
    if not _is_utf8(header_line):
        raise CsvFileError(f"line {number}: not UTF-8 text (is this a CSV file?)")
    positions = _column_positions(header)
    return _records(lines, itemgetter(*positions), len(header))


def _lines(stream: BinaryIO) -> Iterator[tuple[int, str, bool]]:
    """(number, text, whole) for each physical line (LF or CRLF). Bytes that are not UTF-8 stay
    as lone surrogates (errors="surrogateescape"). A line over MAX_LINE_BYTES is skipped in
    chunks and comes as (number, its first bytes, False)."""
    for number in itertools.count(1):
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            start = raw[: RAW_PREVIEW_CHARS * 4]
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(1 << 16)
            yield number, start.decode("utf-8", "surrogateescape"), False
        else:
            yield number, raw.decode("utf-8", "surrogateescape"), True


def _records(
    lines: Iterator[tuple[int, str, bool]], pick_columns: itemgetter, width: int
) -> Iterator[Record]:
    for number, line, whole in lines:
        if not whole:
            reason = f"line longer than {MAX_LINE_BYTES} bytes"
            yield Record(number, None, reason, f"{_readable(line)[:RAW_PREVIEW_CHARS]}…")
            continue
        line = line.rstrip("\r\n")
        # The common line (no quotes, UTF-8, every field): one split, one tuple. Any other
        # line takes the checks below, in their order.
        if '"' not in line and _is_utf8(line):
            row = line.split(",")
            if len(row) == width:
                yield _new_record(Record, (number, pick_columns(row), None, None, len(line)))
                continue
        if not line.strip():
            continue  # a blank line: neither a row nor a reject
        try:
            row = _split_line(line)
        except csv.Error as error:
            yield Record(number, None, f"malformed CSV quoting: {error}", _printable(line))
            continue
        if not _is_utf8(line):  # its fields hold every character of the line but quotes
            yield Record(number, None, "bytes are not valid UTF-8", _printable(line))
        elif len(row) != width:
            yield Record(
                number, None, f"expected {width} fields, found {len(row)}", _printable(line)
            )
        else:
            yield Record(number, pick_columns(row), None, None, len(line))
