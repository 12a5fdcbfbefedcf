"""The user's columns are declared once (users.columns); the model, the CSV contract, the API,
the cache writer and the admin agree with that declaration."""

import json
from datetime import UTC, datetime

from tests.support.data import HEADER
from users.api.serializers import UserSerializer
from users.columns import USER_COLUMNS, UserRow
from users.models import User
from users.payloads import to_json, user_payload, users_json


def test_the_model_declares_the_same_columns_in_the_same_order():
    editable = [field.name for field in User._meta.concrete_fields if field.editable]
    assert editable == list(USER_COLUMNS)


def test_the_csv_header_is_the_columns():
    assert HEADER.split(",") == list(USER_COLUMNS)


def test_the_api_shows_every_column():
    assert list(UserSerializer().fields) == list(USER_COLUMNS)


def test_the_direct_json_writer_matches_the_payload_for_every_column():
    row = UserRow(5, "Zoë", 'Q"uote', "z@example.com", datetime(2020, 1, 2, 3, 4, 5, 6, UTC),
                  None, datetime(2021, 1, 1, tzinfo=UTC), None)  # fmt: skip
    assert users_json([row]) == [to_json(user_payload(row)).encode()]
    assert list(json.loads(users_json([row])[0])) == list(USER_COLUMNS)


def test_the_admin_edits_every_column_but_the_id():
    from users.admin import EDITABLE

    assert ["id", *EDITABLE] == list(USER_COLUMNS)
