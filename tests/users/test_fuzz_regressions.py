"""Inputs the schema fuzz (test_schema_fuzz.py) found answered with a 5xx or with an answer its
schema does not document, kept as plain requests: each must get a status the schema documents
for its operation, with a body of the documented shape, and log no traceback."""

from __future__ import annotations

import base64
import json
import logging

import jsonschema
import pytest

pytestmark = pytest.mark.django_db


def assert_documented(openapi: dict, method: str, path: str, response) -> None:
    """`response` is one the schema documents for `method path`: its status, and for a JSON
    body, its shape."""
    documented = openapi["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert 400 <= response.status_code < 500, (status, response.content)
    assert status in documented, f"{method.upper()} {path}: {status} not in {sorted(documented)}"
    schema = documented[status]["content"]["application/json"]["schema"]
    assert response["Content-Type"] == "application/json"
    # `$ref`s point into the document's components: validate against a root that has them.
    jsonschema.validate(response.json(), {**schema, "components": openapi["components"]})


@pytest.fixture
def no_traceback(caplog):
    caplog.set_level(logging.INFO)
    yield
    records = caplog.get_records("call")
    assert not [record for record in records if record.exc_info], caplog.text


def cursor(data) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        "ordering=,",  # an empty ordering term was taken for a field named ""
        "ordering=,id",
        "ordering=,-last_name&page_size=3",
        "created_after=8587-07-18T00%3A05%3A49.147%2B17%3A01"
        "&first_name=%C2%8F%28%F4%88%8A%98%F0%AA%8E%9B",
        "created_before=0038-05-08T18:34:55.73-20:21",
        "ordering=created_at&cursor=" + cursor({"k": ["1629-12-24T19:02:20+22:00", 1]}),
    ],
)
def test_list_query_found_by_the_fuzz_is_a_documented_answer(
    writer_client, openapi, no_traceback, query
):
    response = writer_client.get(f"/users?{query}")
    if response.status_code == 200:
        return  # a valid query (an empty ordering term is no ordering)
    assert_documented(openapi, "get", "/users", response)


def test_empty_ordering_terms_are_ignored(writer_client, user_factory):
    users = [user_factory(), user_factory()]
    response = writer_client.get("/users?ordering=,-id")
    assert response.status_code == 200
    assert [user["id"] for user in response.json()["results"]] == [users[1].id, users[0].id]


@pytest.mark.parametrize(
    "body",
    [
        b"\x00",  # a JSON parse error
        b"{",
    ],
)
def test_create_body_found_by_the_fuzz_is_a_documented_answer(
    writer_client, openapi, no_traceback, body
):
    response = writer_client.post("/users", data=body, content_type="application/json")
    assert response.status_code == 400
    assert_documented(openapi, "post", "/users", response)
    # Not {"detail": ...}: a 400 has one shape, request-wide errors under non_field_errors.
    assert list(response.json()) == ["non_field_errors"]


@pytest.mark.parametrize(("method", "path"), [("get", "/users"), ("delete", "/users/{id}")])
def test_host_outside_allowed_hosts_is_a_documented_400_logged_as_one_line(
    writer_client, openapi, no_traceback, method, path
):
    # Django logs this one at ERROR with its traceback (django.security.DisallowedHost).
    response = getattr(writer_client, method)(path.format(id=1), HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert_documented(openapi, method, path, response)
