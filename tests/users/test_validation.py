"""The field rules' quick forms give what their plain definitions give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.support.data import LENGTHENING_EMAIL
from users.validation import EMAIL_MAX_LENGTH, FieldError, clean_email, epoch_ms_to_datetime

_django_email = EmailValidator()
_addresses = (
    st.emails().map(str)
    | st.text(max_size=16)
    | st.builds(
        "{}@{}".format,
        st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
        st.sampled_from(["x.com", "EXAMPLE.org", "localhost", "[127.0.0.1]", "-x.com", "ä.de"]),
    )
)


@settings(max_examples=800, deadline=None)
@given(_addresses)
@example("ſ@x.com")  # folds into A-Z under Django's IGNORECASE pattern
@example("K@x.com")
@example('"quoted local"@x.com')
@example("a..b@x.com")
@example(LENGTHENING_EMAIL)
def test_clean_email_accepts_what_djangos_validator_accepts(address):
    value = address.strip()
    local, _, domain = value.rpartition("@")
    try:
        _django_email(value)
        # The limit is the stored value's: the domain lower-cased.
        django_accepts = bool(value) and len(f"{local}@{domain.lower()}") <= EMAIL_MAX_LENGTH
    except ValidationError:
        django_accepts = False
    try:
        cleaned = clean_email(address)
    except FieldError:
        assert not django_accepts
    else:
        assert django_accepts
        assert cleaned == f"{local}@{domain.lower()}"
        assert len(cleaned) <= EMAIL_MAX_LENGTH


def test_an_address_that_grows_past_the_limit_when_normalised_is_refused():
    assert len(LENGTHENING_EMAIL) <= EMAIL_MAX_LENGTH < len(LENGTHENING_EMAIL.lower())
    try:
        clean_email(LENGTHENING_EMAIL)
    except FieldError as error:
        assert error.column == "email_address"
        assert error.message == "longer than 254 characters once normalised (385)"
    else:
        raise AssertionError("accepted an address longer than the column once normalised")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST_MS = -62135596800000  # 0001-01-01T00:00:00Z
_LAST_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


@settings(max_examples=1000, deadline=None)
@given(st.integers(min_value=_FIRST_MS, max_value=_LAST_MS))
@example(_FIRST_MS)
@example(_LAST_MS)
@example(1)
@example(-1)
def test_epoch_ms_is_exact_across_the_whole_range(ms):
    assert epoch_ms_to_datetime(ms, column="c") == _EPOCH + timedelta(milliseconds=ms)


def test_epoch_ms_outside_the_range_is_a_field_error():
    for ms in (_FIRST_MS - 1, _LAST_MS + 1, 10**20):
        try:
            epoch_ms_to_datetime(ms, column="created_at")
        except FieldError as error:
            assert error.column == "created_at"
        else:
            raise AssertionError(f"{ms} accepted")
