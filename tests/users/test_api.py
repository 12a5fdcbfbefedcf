"""The users endpoints through Django's test client: status codes, bodies and auth."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.support.data import LENGTHENING_EMAIL
from users.models import User
from users.ratelimit import anon_window
from users.validation import API_ID_START

pytestmark = pytest.mark.django_db

USER_FIELDS = {
    "id",
    "first_name",
    "last_name",
    "email_address",
    "created_at",
    "deleted_at",
    "merged_at",
    "parent_user_id",
}
NEW_USER = {"first_name": "Ada", "last_name": "Lovelace", "email_address": "ada@Example.COM"}


def test_create_returns_201_with_server_assigned_id(
    writer_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = writer_client.post("/users", {**NEW_USER, "id": 7}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == USER_FIELDS
    assert body["id"] >= API_ID_START  # the id in the body was ignored
    assert body["email_address"] == "ada@example.com"  # domain lower-cased, as the CSV path does
    assert body["created_at"].endswith("Z")
    assert body["deleted_at"] is None and body["parent_user_id"] is None
    assert User.objects.filter(id=body["id"]).exists()
    assert not User.objects.filter(id=7).exists()


def test_create_accepts_created_at(writer_client):
    response = writer_client.post(
        "/users", {**NEW_USER, "created_at": "2021-03-04T05:06:07+02:00"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["created_at"] == "2021-03-04T03:06:07Z"


def test_create_validation_errors_name_each_field(writer_client):
    response = writer_client.post(
        "/users",
        {"first_name": "x" * 256, "email_address": "not-an-email", "created_at": "yesterday"},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["first_name"] == ["longer than 255 characters (256)"]  # the CSV path's message
    assert body["last_name"] == ["This field is required."]
    assert body["email_address"] == ["not a valid email address: 'not-an-email'"]
    assert "created_at" in body
    assert User.objects.count() == 0


def test_create_with_malformed_json_is_400(writer_client):
    response = writer_client.post("/users", "{bad json", content_type="application/json")
    assert response.status_code == 400
    (message,) = response.json()["non_field_errors"]
    assert message.startswith("JSON parse error")


@pytest.mark.parametrize(
    "body, message",
    [
        ("[" * 100_000, "JSON parse error - nested too deeply"),
        ('{"first_name": ' + "[" * 100_000, "JSON parse error - nested too deeply"),
        ('"a string"', "Invalid data. Expected a dictionary, but got str."),
    ],
)
def test_unusable_json_bodies_are_400_with_the_400_shape(writer_client, caplog, body, message):
    response = writer_client.post("/users", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": [message]}
    assert_logged_as_client_error(caplog)


def assert_logged_as_client_error(caplog) -> None:
    """An error the client caused: one warning line, no traceback, nothing at ERROR."""
    assert [record.levelname for record in caplog.records] == ["WARNING"], caplog.text
    assert caplog.records[0].exc_info is None
    assert "\n" not in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("last_name", 1, "Must be a string."),
        ("first_name", 1.5, "Must be a string."),
        ("email_address", 7, "Must be a string."),
        ("first_name", True, "Must be a string."),
        ("first_name", ["Ada"], "Must be a string."),
        ("first_name", "", "must not be blank"),
        ("last_name", " \t ", "must not be blank"),
        ("first_name", "x" * 256, "longer than 255 characters (256)"),
        ("first_name", "A\x07da", "contains a control character (U+0007)"),
        ("last_name", "Love\u0085lace", "contains a control character (U+0085)"),
        ("email_address", "", "is required"),
    ],
)
def test_names_and_email_must_be_real_strings(writer_client, field, value, message):
    response = writer_client.post("/users", {**NEW_USER, field: value}, format="json")
    assert response.status_code == 400
    assert response.json() == {field: [message]}
    assert User.objects.count() == 0


def test_an_address_too_long_once_normalised_is_400_naming_the_field(writer_client):
    response = writer_client.post(
        "/users", {**NEW_USER, "email_address": LENGTHENING_EMAIL}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {
        "email_address": ["longer than 254 characters once normalised (385)"]
    }
    assert User.objects.count() == 0


def test_names_are_trimmed(writer_client):
    response = writer_client.post(
        "/users", {**NEW_USER, "first_name": "  Ada ", "last_name": "Love lace\t"}, format="json"
    )
    assert response.status_code == 201
    assert (response.json()["first_name"], response.json()["last_name"]) == ("Ada", "Love lace")


@pytest.mark.parametrize(
    "created_at",
    ["9999-12-31T23:59:59.999999-23:59", "0001-01-01T00:00:00+23:59"],
)
def test_created_at_outside_years_1_to_9999_in_utc_is_400(writer_client, created_at):
    response = writer_client.post("/users", {**NEW_USER, "created_at": created_at}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["created_at"]


def test_created_at_with_an_offset_postgresql_refuses_is_stored_in_utc(writer_client):
    response = writer_client.post(
        "/users", {**NEW_USER, "created_at": "0399-07-19T00:27:07.12-16:41"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["created_at"] == "0399-07-19T17:08:07.120000Z"


def test_unauthenticated_writes_are_401_json(anon_client, user_factory):
    user = user_factory()
    for response in (
        anon_client.post("/users", NEW_USER, format="json"),
        anon_client.delete(f"/users/{user.id}"),
    ):
        assert response.status_code == 401
        assert response["Content-Type"] == "application/json"
        assert response.json() == {"detail": "Authentication credentials were not provided."}
        assert response["WWW-Authenticate"] == 'Token realm="api"'
    assert User.objects.filter(id=user.id).exists()


def test_bad_token_is_401(anon_client):
    anon_client.credentials(HTTP_AUTHORIZATION="Token nope")
    response = anon_client.post("/users", NEW_USER, format="json")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid, expired or revoked token."}


def test_session_login_of_a_writer_can_write(anon_client, django_user_model):
    from django.contrib.auth.models import Group

    account = django_user_model.objects.create_user("operator", password="a long passphrase")
    account.groups.add(Group.objects.get(name="writer"))
    anon_client.force_login(account)
    assert anon_client.post("/users", NEW_USER, format="json").status_code == 201


def test_get_user(reader_client, user_factory, clean_user_cache):
    user = user_factory(first_name="Émile", deleted_at="2022-01-01T00:00:00Z", parent_user_id=9)
    clean_user_cache(user.id)
    response = reader_client.get(f"/users/{user.id}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "id": user.id,
        "first_name": "Émile",
        "last_name": user.last_name,
        "email_address": user.email_address,
        "created_at": user.created_at.isoformat().replace("+00:00", "Z"),
        "deleted_at": "2022-01-01T00:00:00Z",
        "merged_at": None,
        "parent_user_id": 9,
    }


@pytest.mark.parametrize("path", ["/users/999999999", "/users/abc", "/users/1.5", "/users/1/x"])
def test_missing_or_non_numeric_user_is_404_json(reader_client, path):
    response = reader_client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_id_beyond_bigint_is_404_not_500(reader_client, writer_client):
    assert reader_client.get("/users/99999999999999999999").status_code == 404
    assert writer_client.delete("/users/99999999999999999999").status_code == 404


@override_settings(DEBUG=True)
def test_errors_stay_json_with_debug_on(reader_client):
    response = reader_client.get("/users/not-a-number", HTTP_ACCEPT="text/html")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_delete_user(writer_client, user_factory, django_capture_on_commit_callbacks):
    user = user_factory()
    with django_capture_on_commit_callbacks(execute=True):
        response = writer_client.delete(f"/users/{user.id}")
    assert response.status_code == 204
    assert response.content == b""
    assert not User.objects.filter(id=user.id).exists()
    again = writer_client.delete(f"/users/{user.id}")
    assert again.status_code == 404
    assert again.json() == {"detail": "Not found."}


def test_unsupported_methods_are_405_json(writer_client, user_factory):
    user = user_factory()
    for response in (writer_client.put(f"/users/{user.id}", {}), writer_client.patch("/users", {})):
        assert response.status_code == 405
        assert response.json()["detail"].startswith("Method ")


def test_unexpected_error_is_500_json(reader_client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("users.selectors.user_list", broken)
    response = reader_client.get("/users")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}


@pytest.mark.parametrize("debug", [False, True])
def test_errors_before_the_view_are_json_under_users(monkeypatch, settings, debug):
    from django.middleware.common import CommonMiddleware
    from django.test import Client

    settings.DEBUG = debug
    client = Client(raise_request_exception=False)
    response = client.get("/users", HTTP_HOST="not-allowed.example")
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Bad request."]}
    response = client.get("/admin/", HTTP_HOST="not-allowed.example")
    assert response.status_code == 400
    assert not response["Content-Type"].startswith("application/json")

    def broken(self, request):
        raise RuntimeError("boom")

    monkeypatch.setattr(CommonMiddleware, "process_request", broken)
    response = client.get("/users/1")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}


def test_browsable_api_renders_html(reader_client, user_factory, plain_static_storage):
    user = user_factory()
    for path in ("/users", f"/users/{user.id}"):
        response = reader_client.get(path, HTTP_ACCEPT="text/html")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
        assert b"Django REST framework" in response.content


def test_anonymous_clients_are_rate_limited_in_public_read_mode(
    anon_client, user_factory, settings, redis_client
):
    settings.API_READS_REQUIRE_AUTH = False
    settings.API_ANON_THROTTLE_RATE = "3/day"  # a window that will not roll over mid-test
    user = user_factory()
    key = anon_window("127.0.0.1").key
    redis_client.delete(key)
    statuses = [anon_client.get(f"/users/{user.id}").status_code for _ in range(3)]
    statuses.append(anon_client.get("/users").status_code)  # same counter for every endpoint
    assert statuses == [200, 200, 200, 429]
    limited = anon_client.get(f"/users/{user.id}")
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) >= 1
    assert "throttled" in limited.json()["detail"]
    assert int(redis_client.get(key)) == 5  # the counter lives in the shared Redis
    redis_client.delete(key)


def test_body_over_the_limit_is_413_also_without_the_asgi_limit(writer_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = settings.API_MAX_BODY_BYTES = 1000
    body = '{"first_name": "' + "x" * 2000 + '"}'
    response = writer_client.post("/users", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large: at most 1000 bytes."}
