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
