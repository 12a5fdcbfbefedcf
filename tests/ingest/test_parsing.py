"""Every rule of the CSV contract, checked on inputs built right here."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from ingest.parsing import CsvFileError, DataLineCounter, read_records, to_csv_line
from tests.support.data import HEADER, LENGTHENING_EMAIL
from tests.support.environment import ROOT
from users.validation import RowRejected, parse_row

GOOD = "1,Ann,Lee,ann@example.com,1600000000123,-1,-1,-1"


def records(content: str | bytes) -> list:
    data = content.encode() if isinstance(content, str) else content
    return list(read_records(io.BytesIO(data)))


def parse(line: str):
    (record,) = records(f"{HEADER}\n{line}\n")
    assert record.reason is None, record.reason
    return parse_row(record.fields)


def rejected(line: str) -> str:
    with pytest.raises(RowRejected) as error:
        parse(line)
    return error.value.reason


# --- the file --------------------------------------------------------------------------------


def test_good_row_is_typed_and_numbered_from_line_two():
    (record,) = records(f"{HEADER}\n{GOOD}\n")
    assert record.line == 2
    row = parse_row(record.fields)
    assert row.id == 1
    assert (row.first_name, row.last_name, row.email_address) == ("Ann", "Lee", "ann@example.com")
    assert row.created_at == datetime(2020, 9, 13, 12, 26, 40, 123000, tzinfo=UTC)
    assert row.deleted_at is row.merged_at is row.parent_user_id is None


def test_columns_are_found_by_name_in_any_order_and_extra_columns_ignored():
    content = (
        "email_address,extra,parent_user_id,id,last_name,first_name,merged_at,deleted_at,created_at\n"
        "ann@example.com,zzz,7,3,Lee,Ann,-1,-1,1600000000000\n"
    )
    row = parse_row(records(content)[0].fields)
    assert (row.id, row.first_name, row.last_name, row.parent_user_id) == (3, "Ann", "Lee", 7)


def test_header_names_are_trimmed_and_case_insensitive():
    content = (
        " ID , First_Name,last_name,email_address,created_at,deleted_at,merged_at,parent_user_id\n"
        + GOOD
    )
    assert parse_row(records(content)[0].fields).id == 1


def test_missing_required_column_refuses_the_file():
    with pytest.raises(CsvFileError, match="missing required column.*email_address"):
        records("id,first_name,last_name,created_at,deleted_at,merged_at,parent_user_id\n")


@pytest.mark.parametrize("content", [b"", b"\n\n", b"   \n"])
def test_empty_file_is_refused(content):
    with pytest.raises(CsvFileError, match="empty"):
        records(content)


def test_binary_file_is_refused():
    with pytest.raises(CsvFileError):
        records(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")


def test_utf8_bom_and_crlf_are_accepted():
    content = f"\ufeff{HEADER}\r\n{GOOD}\r\n".encode()
    (record,) = records(content)
    assert parse_row(record.fields).email_address == "ann@example.com"


def test_rfc4180_quoting_with_commas_and_doubled_quotes():
    row = parse('2,"Smith, Jr.","O""Brien",a@example.com,1600000000000,-1,-1,-1')
    assert (row.first_name, row.last_name) == ("Smith, Jr.", 'O"Brien')


def test_whitespace_around_fields_is_trimmed():
    row = parse(" 4 ,  Zoë , Müller ,  zoe@example.com , 1600000000000 , -1 , -1 , -1 ")
    assert (row.id, row.first_name, row.last_name, row.email_address) == (
        4,
        "Zoë",
        "Müller",
        "zoe@example.com",
    )


def test_blank_lines_are_skipped_but_still_counted_in_line_numbers():
    found = records(f"{HEADER}\n\n{GOOD}\n   \n2,B,C,b@example.com,1600000000000,-1,-1,-1\n")
    assert [record.line for record in found] == [3, 5]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_data_lines_are_counted_as_the_reader_sees_them(chunk, monkeypatch):
    monkeypatch.setattr("ingest.parsing.MAX_LINE_BYTES", 120)
    content = (
        b"\xef\xbb\xbf\n \t\n" + HEADER.encode() + b"\n1,Ann\n\n \r\n\x1c\x1f\n"
        + b"\xe3\x80\x80\xc2\x85\n\xff\n\xe2\x80\n" + b" " * 300 + b"\n" + b"x" * 300
        + b"\nlast,without,newline"
    )  # fmt: skip
    counter = DataLineCounter()
    for start in range(0, len(content), chunk):
        counter.feed(content[start : start + chunk])
    assert counter.data_lines == len(list(read_records(io.BytesIO(content)))) == 6


def test_wrong_number_of_fields_is_rejected_with_its_line():
    (record,) = records(f"{HEADER}\n1,Ann,Lee\n")
    assert (record.line, record.fields) == (2, None)
    assert record.reason == "expected 8 fields, found 3"
    assert record.raw == "1,Ann,Lee"


def test_invalid_utf8_rejects_only_that_row():
    content = (
        f"{HEADER}\n".encode()
        + b"1,\xff\xfe,Lee,a@example.com,1600000000000,-1,-1,-1\n"
        + (f"{GOOD}\n".encode())
    )
    bad, good = records(content)
    assert (bad.line, bad.reason) == (2, "bytes are not valid UTF-8")
    assert "\ufffd" in bad.raw
    assert good.line == 3 and good.fields is not None


def test_unterminated_quote_rejects_one_line_without_swallowing_the_next():
    bad, good = records(f'{HEADER}\n1,"Ann,Lee,a@example.com,1600000000000,-1,-1,-1\n{GOOD}\n')
    assert bad.line == 2 and "quoting" in bad.reason
    assert good.line == 3 and good.fields is not None


# --- the row ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("abc,Ann,Lee,a@example.com,1600000000000,-1,-1,-1", "id: not an integer: 'abc'"),
        ("-5,Ann,Lee,a@example.com,1600000000000,-1,-1,-1", "id: not a positive integer: -5"),
        ("0,Ann,Lee,a@example.com,1600000000000,-1,-1,-1", "id: not a positive integer: 0"),
        (",Ann,Lee,a@example.com,1600000000000,-1,-1,-1", "id: is required"),
        ("1.5,Ann,Lee,a@example.com,1600000000000,-1,-1,-1", "id: not an integer: '1.5'"),
        ("1,Ann,Lee,a@example.com,,-1,-1,-1", "created_at: is required"),
        ("1,Ann,Lee,a@example.com,-1,-1,-1,-1", "created_at: is required"),
        ("1,Ann,Lee,a@example.com,2020-01-01,-1,-1,-1", "created_at: not an integer: '2020-01-01'"),
        ("1,Ann,Lee,a@example.com,1600000000000,abc,-1,-1", "deleted_at: not an integer: 'abc'"),
        ("1,Ann,Lee,a@example.com,1600000000000,-1,1e12,-1", "merged_at: not an integer: '1e12'"),
        ("1,Ann,Lee,a@example.com,1600000000000,-1,-1,x9", "parent_user_id: not an integer: 'x9'"),
        (
            "1,Ann,Lee,a@example.com,1600000000000,-1,-1,-7",
            "parent_user_id: not a positive integer: -7",
        ),
        (
            "1,Ann,Lee,not-an-email,1600000000000,-1,-1,-1",
            "email_address: not a valid email address: 'not-an-email'",
        ),
        ("1,Ann,Lee,,1600000000000,-1,-1,-1", "email_address: is required"),
        (
            "1,Ann,Lee,a@example.com,99999999999999999999,-1,-1,-1",
            "created_at: timestamp out of range: 99999999999999999999",
        ),
        (  # past a bigint: COPY would fail the whole batch
            "1,Ann,Lee,a@example.com,1600000000000,-1,-1,9223372036854775808",
            "parent_user_id: integer out of range: 9223372036854775808",
        ),
        (  # int() refuses strings of over 4,300 digits; the message stays short
            f"{'9' * 5000},Ann,Lee,a@example.com,1600000000000,-1,-1,-1",
            f"id: integer out of range: '{'9' * 40}'… (5000 characters)",
        ),
        ("1,,Lee,a@example.com,1600000000000,-1,-1,-1", "first_name: must not be blank"),
        ("1,Ann,  ,a@example.com,1600000000000,-1,-1,-1", "last_name: must not be blank"),
        (
            "1,Ann\x07,Lee,a@example.com,1600000000000,-1,-1,-1",
            "first_name: contains a control character (U+0007)",
        ),
        (
            "1,Ann,L\x00ee,a@example.com,1600000000000,-1,-1,-1",
            "last_name: contains a control character (U+0000)",
        ),
        (
            '1,"Ann\tMarie",Lee,a@example.com,1600000000000,-1,-1,-1',
            "first_name: contains a control character (U+0009)",
        ),
    ],
)
def test_bad_values_are_rejected_naming_the_column(line, reason):
    assert rejected(line) == reason


def test_name_longer_than_255_characters_is_rejected():
    assert rejected(f"1,{'x' * 256},Lee,a@example.com,1600000000000,-1,-1,-1") == (
        "first_name: longer than 255 characters (256)"
    )
    assert parse(f"1,{'x' * 255},Lee,a@example.com,1600000000000,-1,-1,-1").first_name == "x" * 255


def test_ids_in_the_api_range_are_rejected():
    assert "ids from 1000000000000000 are the API's" in rejected(
        "1000000000000000,Ann,Lee,a@example.com,1600000000000,-1,-1,-1"
    )


def test_empty_or_minus_one_means_none_for_nullable_columns():
    row = parse("1,Ann,Lee,a@example.com,1600000000000,,-1,")
    assert row.deleted_at is row.merged_at is row.parent_user_id is None


def test_nullable_columns_are_parsed_when_present():
    row = parse("1,Ann,Lee,a@example.com,1600000000000,1600000001000,1600000002500,42")
    assert row.deleted_at == datetime(2020, 9, 13, 12, 26, 41, tzinfo=UTC)
    assert row.merged_at == datetime(2020, 9, 13, 12, 26, 42, 500000, tzinfo=UTC)
    assert row.parent_user_id == 42


def test_email_domain_is_lowercased_but_local_part_kept():
    assert parse("1,Ann,Lee,Ann.Lee@Example.COM,1600000000000,-1,-1,-1").email_address == (
        "Ann.Lee@example.com"
    )


def test_names_are_trimmed():
    row = parse("1,  Ann Marie ,\tLee  ,a@example.com,1600000000000,-1,-1,-1")
    assert (row.first_name, row.last_name) == ("Ann Marie", "Lee")


def test_reading_streams_without_holding_the_file():
    # A generator: a million-row file is never materialised.
    content = (HEADER + "\n" + (GOOD + "\n") * 3).encode()
    iterator = read_records(io.BytesIO(content))
    assert next(iterator).line == 2


def test_a_line_over_the_limit_is_rejected_without_stopping_the_file(monkeypatch):
    monkeypatch.setattr("ingest.parsing.MAX_LINE_BYTES", 200)
    long_line = "2,Bob," + "x" * 5000 + ",bob@example.com,1617235200000,-1,-1,-1"
    content = f"{HEADER}\n{GOOD}\n{long_line}\n{GOOD}\n".encode()
    found = records(content)
    assert [r.line for r in found] == [2, 3, 4]
    assert found[0].fields is not None and found[2].fields is not None
    rejected = found[1]
    assert rejected.fields is None
    assert rejected.reason == "line longer than 200 bytes"
    assert rejected.raw.startswith("2,Bob,xxx") and rejected.raw.endswith("…")
    assert len(rejected.raw) <= 1001


def test_a_header_over_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr("ingest.parsing.MAX_LINE_BYTES", 100)
    with pytest.raises(CsvFileError, match="line 1: longer than 100 bytes"):
        records(b"\x00" * 1000)


def test_long_rejected_lines_are_reported_cut_short():
    line = "3,Ann,Lee,not-an-email," + "1" * 3000 + ",-1,-1,-1"
    assert rejected(line).startswith("email_address")
    (record,) = records(f"{HEADER}\n{line}\n")
    raw = to_csv_line(record.fields)
    assert raw.startswith("3,Ann,Lee,not-an-email,111")
    assert raw.endswith(f"… ({len(line) - 1000} more characters)")


def test_the_sample_file_rejects_the_rows_the_readme_says():
    reasons = []
    with open(ROOT / "data" / "users.csv", "rb") as stream:
        for record in read_records(stream):
            if record.fields is None:
                reasons.append(record.reason)
                continue
            try:
                parse_row(record.fields)
            except RowRejected as error:
                reasons.append(error.reason)
    columns = sorted(reason.split(":")[0] for reason in reasons)
    assert len(reasons) == 11, reasons
    assert columns.count("id") == 3 and columns.count("first_name") == 1, reasons


# --- the common-row fast path agrees with the field rules --------------------------------------

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from users.validation import _plain_row, parse_row_by_rules  # noqa: E402

_digits = st.integers(min_value=-5, max_value=2**64).map(str)
_tricky_numbers = st.sampled_from(
    ["-1", "", " 12", "12 ", "+5", "0", "007", "1e3", "١٢", "²", "999999999999999",
     "1000000000000000", "9223372036854775807", "9223372036854775808", "9" * 19, "9" * 30,
     "253402300799999", "253402300800000", "-62135596800000", "-62135596800001",
     "4102444800001", "32503680000001"]
)  # fmt: skip
_numbers = _digits | _tricky_numbers | st.text(max_size=6)
_names = st.sampled_from(["Ann", " Ann ", "Hélène", "Иванов", "O'Neil", "a\tb", "a\x85b",
                          "x\u2028y", "", " ", "\x7f", "e\u0301", "A" * 255, "A" * 256]) | st.text(
    max_size=8
)  # fmt: skip
_emails = st.sampled_from(
    ["ann@example.com", "Ann@EXAMPLE.com", " ann@example.com", "ann@localhost", "ſ@x.com",
     "K@x.com", "a..b@x.com", '"a b"@x.com', "ann@[127.0.0.1]", "ann@-x.com", "ann@x", "@x.com",
     "ann@", "a@b@x.com", "ann@exämple.com", "ännchen@x.com", "a" * 250 + "@x.co", "",
     LENGTHENING_EMAIL, "a" * 240 + "@İİİİ.de"]
) | st.emails().map(str) | st.text(max_size=12)  # fmt: skip


def _by_rules(fields):
    try:
        return parse_row_by_rules(fields)
    except RowRejected:
        return None


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(_numbers, _names, _names, _emails, _numbers, _numbers, _numbers, _numbers))
@example(("1", "Ann", "Lee", "ann@example.com", "1600000000123", "-1", "", "7"))
def test_the_fast_path_returns_what_the_rules_return_or_steps_aside(fields):
    fast = _plain_row(fields)
    if fast is not None:
        assert fast == _by_rules(fields)
        assert [type(value) for value in fast] == [type(value) for value in _by_rules(fields)]


def test_the_fast_path_takes_the_common_rows():
    rows = [
        ("1", "Ann", "Lee", "ann@Example.COM", "1600000000123", "-1", "-1", "-1"),
        ("2", "Hélène", "Иванов", "h.i@x.fr", "1422087878020", "", "1682621068227", "1"),
    ]
    for fields in rows:
        assert _plain_row(fields) == parse_row_by_rules(fields)
    assert _plain_row(rows[0]).email_address == "ann@example.com"
    assert _plain_row((" 1", "Ann", "Lee", "a@x.com", "1", "-1", "-1", "-1")) is None


def test_both_paths_refuse_an_address_longer_than_the_column_once_normalised():
    fields = ("1", "Ann", "Lee", LENGTHENING_EMAIL, "1600000000000", "-1", "-1", "-1")
    assert _plain_row(fields) is None
    with pytest.raises(RowRejected, match="longer than 254 characters once normalised"):
        parse_row(fields)
