"""The one JSON shape of a user: the fast ingest encoder writes exactly what json does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from users.columns import UserRow
from users.payloads import to_json, user_json, user_payload

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
    assert user_json(user) == to_json(user_payload(user))


@pytest.mark.parametrize("first_name", ["Ann", "Zoë", "line\u2028sep\u2029", 'q"\\'])
def test_to_json_writes_what_drf_renders(first_name):
    """The API's two paths (cached bytes, DRF's renderer) give the same bytes."""
    from rest_framework.renderers import JSONRenderer

    user = UserRow(7, first_name, "Lee", "a@b.co", WHEN, None, WHEN, 3)
    payload = user_payload(user)
    assert to_json(payload).encode() == JSONRenderer().render(payload)
    assert user_json(user) == to_json(payload)
