"""Structured logs: a request id on every line of a request (accepted or generated, returned in
the response), JSON lines in production."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest

from viswals.logging import ContextFilter, json_formatter, request_id_var


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured():
    handler = Capture()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler.records
    root.removeHandler(handler)


def test_request_id_is_accepted_returned_and_on_every_line(client, captured):
    response = client.get("/users/not-a-number", headers={"X-Request-ID": "abc-123"})

    assert response.status_code == 404
    assert response["X-Request-ID"] == "abc-123"
    lines = [r for r in captured if r.name == "django.request"]
    assert lines and all(r.request_id == "abc-123" for r in lines)


@pytest.mark.parametrize("supplied", [None, "", "has spaces", "x" * 200, "a\nb"])
def test_missing_or_unsafe_request_id_is_replaced_by_a_generated_one(client, supplied):
    headers = {} if supplied is None else {"X-Request-ID": supplied}
    response = client.get("/healthz", headers=headers)

    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


def test_json_lines_have_timestamp_level_logger_message_and_request_id():
    record = logging.LogRecord("users.api", logging.WARNING, __file__, 1, "hello %s", ("x",), None)
    token = request_id_var.set("req-1")
    try:
        ContextFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = json_formatter().format(record)

    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "WARNING"
    assert data["logger"] == "users.api"
    assert data["message"] == "hello x"
    assert data["request_id"] == "req-1"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", data["timestamp"])


@pytest.mark.django_db(transaction=True)
def test_production_server_writes_json_lines_with_the_request_id(web_server):
    server = web_server(
        workers=2,
        DJANGO_DEBUG="false",
        DJANGO_SECURE_SSL_REDIRECT="false",
        LOG_LEVEL="INFO",
    )
    response = httpx.get(f"{server.base}/users/nope", headers={"X-Request-ID": "ops-json-1"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "ops-json-1"
    # The ASGI fast path answers too, with the id returned.
    fast = httpx.get(f"{server.base}/users/1", headers={"X-Request-ID": "ops-json-2"})
    assert fast.headers["X-Request-ID"] == "ops-json-2"
    server.stop()

    # Worker processes log JSON once Django is loaded (uvicorn's supervisor keeps its text).
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(r["logger"] == "uvicorn.error" for r in records)
    not_found = [r for r in records if r.get("request_id") == "ops-json-1"]
    assert not_found and not_found[0]["logger"] == "django.request"
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)


@pytest.mark.django_db(transaction=True)
def test_a_4xx_is_logged_once_with_method_and_path_but_never_the_query(web_server):
    # Debug on (the development setting) is where Django adds a handler of its own; JSON lines
    # are where the request's repr, query and all, used to be printed.
    server = web_server(workers=1, DJANGO_DEBUG="true", LOG_FORMAT="json", LOG_LEVEL="INFO")
    query = "email=ada.secret%40example.com&cursor=c2VjcmV0"
    assert httpx.get(f"{server.base}/users/nope?{query}").status_code == 404
    assert httpx.get(f"{server.base}/users?{query}").status_code == 401
    server.stop()

    log = server.log()
    assert "secret" not in log and "c2VjcmV0" not in log
    for path in ("/users/nope", "/users"):
        lines = [line for line in log.splitlines() if f"{path}'" in line or f'{path}"' in line]
        assert len(lines) == 1, lines
        record = json.loads(lines[0])
        assert record["logger"] == "django.request"
        assert record["request"] == f"GET {path}"


def test_runserver_and_uvicorn_access_lines_leave_the_query_out(captured):
    from viswals import http_protocol  # noqa: F401 - filters uvicorn's access logger
    from viswals.logging import RequestWithoutQuery

    access = logging.getLogger("uvicorn.access")
    record = access.makeRecord(
        access.name, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/users?email=a%40b.c", "1.1", 200), None,
    )  # fmt: skip
    assert access.filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /users HTTP/1.1" 200'

    server_line = logging.getLogger("django.server").makeRecord(
        "django.server", logging.INFO, __file__, 1, '"%s" %s %s',
        ("GET /users?email=a%40b.c HTTP/1.1", "200", "12"), None,
        extra={"status_code": 200, "request": object()},
    )  # fmt: skip
    assert RequestWithoutQuery().filter(server_line)
    assert server_line.getMessage() == '"GET /users HTTP/1.1" 200 12'
    server_line.status_code = 404  # django.request has written that one already
    assert not RequestWithoutQuery().filter(server_line)
