"""The one JSON shape of a user: the fast ingest encoder writes exactly what json does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from users.columns import UserRow
from users.payloads import to_json, user_payload, users_json

WHEN = datetime(2021, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    "first_name, last_name, email_address",
    [
        ("Ann", "Smith", "ann@example.com"),
        ("", "", "a@b.co"),
        ('Quo"te', "Back\\slash", "x@y.z"),
        ("Tab\there", "New\nline", "ctrl\x01\x1f@example.com"),
        ("Zoë", "Ørsted", "名前@例え.jp"),
        ("emoji 🎉", "\u2028\u2029", "e@x.io"),
    ],
)
@pytest.mark.parametrize(
    "created_at, deleted_at, merged_at, parent_user_id",
    [
        (WHEN, None, None, None),
        (WHEN.replace(microsecond=0), WHEN, WHEN + timedelta(days=1), 42),
        (WHEN.astimezone(timezone(timedelta(hours=2))), None, WHEN, 10**15 - 1),
    ],
)
def test_user_json_matches_json_encoding(
    first_name, last_name, email_address, created_at, deleted_at, merged_at, parent_user_id
):
    user = UserRow(
        123, first_name, last_name, email_address, created_at, deleted_at, merged_at,
        parent_user_id,
    )  # fmt: skip
    assert users_json([user]) == [to_json(user_payload(user)).encode()]


@pytest.mark.parametrize("first_name", ["Ann", "Zoë", "line\u2028sep\u2029", 'q"\\'])
def test_to_json_writes_what_drf_renders(first_name):
    """The API's two paths (cached bytes, DRF's renderer) give the same bytes."""
    from rest_framework.renderers import JSONRenderer

    user = UserRow(7, first_name, "Lee", "a@b.co", WHEN, None, WHEN, 3)
    payload = user_payload(user)
    assert to_json(payload).encode() == JSONRenderer().render(payload)
    assert users_json([user]) == [to_json(payload).encode()]


# Any text, "},{" and quotes included: the batch's text is cut back into users at those.
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12) | st.sampled_from(
    ['},{"id":1', '"}', "\\", '\\"},{"id":']
)
_times = st.datetimes(timezones=st.just(UTC))
_users = st.builds(
    UserRow, st.integers(1, 2**63 - 1), _text, _text, _text, _times, st.none() | _times,
    st.none() | _times, st.none() | st.integers(1, 2**63 - 1),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_users, max_size=6))
def test_users_json_matches_json_encoding_for_any_batch(users):
    assert users_json(users) == [to_json(user_payload(user)).encode() for user in users]


def test_users_json_falls_back_to_the_standard_encoder_for_lone_surrogates():
    good = UserRow(1, "Ann", "Lee", "a@b.co", WHEN, None, None, None)
    bad = good._replace(id=2, first_name="bad\udcff")
    assert users_json([good, bad]) == [
        to_json(user_payload(user)).encode("utf-8", "surrogatepass") for user in (good, bad)
    ]
