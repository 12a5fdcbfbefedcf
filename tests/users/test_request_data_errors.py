"""Request data Django refuses (too many query or form fields, too many files, a body too
large) is a JSON 400 (413 for size) on every path, API and not, never a 500 or an HTML page."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

pytestmark = pytest.mark.django_db

TOO_MANY_FIELDS = {"non_field_errors": ["Too many query or form parameters: at most 1000."]}
MANY_PARAMETERS = "&".join(f"p{n}=1" for n in range(1001))


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


@pytest.mark.parametrize("path", ["/users", "/users/1", "/api/schema/", "/admin/login/"])
def test_more_than_1000_query_parameters_are_a_json_400(client, path):
    response = client.get(f"{path}?{MANY_PARAMETERS}")
    assert response.status_code == 400
    assert response.json() == TOO_MANY_FIELDS


def test_more_than_1000_form_fields_are_a_json_400(writer_client, client):
    fields = {f"p{n}": "1" for n in range(1001)}
    api = writer_client.post("/users", fields)  # multipart
    assert api.status_code == 400
    assert api.json() == TOO_MANY_FIELDS
    encoded = writer_client.post(
        "/users", MANY_PARAMETERS, content_type="application/x-www-form-urlencoded"
    )
    assert (encoded.status_code, encoded.json()) == (400, TOO_MANY_FIELDS)
    admin = client.post("/admin/login/", fields)
    assert (admin.status_code, admin.json()) == (400, TOO_MANY_FIELDS)


def test_more_than_100_files_are_a_json_400(writer_client, client):
    files = {f"f{n}": SimpleUploadedFile(f"f{n}.txt", b"x") for n in range(101)}
    expected = {"non_field_errors": ["Too many files: at most 100."]}
    api = writer_client.post("/users", files)
    assert (api.status_code, api.json()) == (400, expected)
    files = {f"f{n}": SimpleUploadedFile(f"f{n}.txt", b"x") for n in range(101)}
    admin = client.post("/admin/login/", files)
    assert (admin.status_code, admin.json()) == (400, expected)


def test_a_form_body_over_the_memory_limit_is_a_json_413_outside_the_api(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = client.post(
        "/admin/login/", "a=" + "x" * 2000, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large: at most 1000 bytes."}
