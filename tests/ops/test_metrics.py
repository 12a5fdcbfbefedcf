"""/metrics on a real two-worker uvicorn server: the numbers move as requests, an ingest and an
SSE stream happen, summed over both worker processes."""

from __future__ import annotations

import secrets
import threading

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families

from tests.support.data import HEADER
from tests.support.waits import wait_until
from users.services import user_create

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

# The token the test servers are started with.
TOKEN = secrets.token_urlsafe(32)
# No test stores (or caches) this id.
ABSENT_ID = 987_654_321_098


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_of(metrics: dict, route: str, status: str) -> float:
    return value(metrics, "http_requests_total", route=route, method="GET", status=status)


def test_metrics_move_with_requests_and_an_ingest(
    web_server, celery_worker_process, write_csv, api_token
):
    server = web_server(workers=2, METRICS_TOKEN=TOKEN)
    reader = {"Authorization": f"Token {api_token('reader')}"}
    before = scrape(server.base)

    for _ in range(20):  # spread over both worker processes by the kernel
        assert httpx.get(f"{server.base}/healthz").status_code == 200
    path = write_csv(
        f"{HEADER}\n"
        "1,Ann,Lee,ann@example.com,1600000000000,-1,-1,-1\n"
        "2,Bob,Ray,bob@example.com,1600000000000,-1,-1,-1\n"
        "3,Bad,Email,not-an-email,1600000000000,-1,-1,-1\n"
        "4,Cy,Moss,cy@example.com,1600000000000,-1,-1,-1\n"
        "5,Short,Row\n"
    )
    call_command("publish_csv", path, "--batch-size", "2", "--wait", "--timeout", "60")
    for user_id in (1, 2, 4):
        assert httpx.get(f"{server.base}/users/{user_id}", headers=reader).status_code == 200
    assert httpx.get(f"{server.base}/users/{ABSENT_ID}", headers=reader).status_code == 404

    after = scrape(server.base)
    assert requests_of(after, "/healthz", "200") - requests_of(before, "/healthz", "200") == 20
    assert (
        requests_of(after, "/users/<int:pk>", "200") - requests_of(before, "/users/<int:pk>", "200")
        == 3
    )
    assert (
        requests_of(after, "/users/<int:pk>", "404") - requests_of(before, "/users/<int:pk>", "404")
        == 1
    )
    # Latency histograms: one observation per request, labelled the same way.
    count = value(
        after, "http_request_duration_seconds_count", route="/healthz", method="GET", status="200"
    )
    assert count == requests_of(after, "/healthz", "200")
    assert not any("/users/1" in dict(labels).get("route", "") for _, labels in after)

    def moved(name: str) -> float:
        return value(after, name) - value(before, name)

    assert moved("ingest_rows_published_total") == 5
    assert moved("ingest_rows_stored_total") == 3
    assert moved("ingest_rows_rejected_total") == 2
    assert moved("ingest_batches_failed_total") == 0
    assert value(after, "ingest_queue_depth", queue=settings.INGEST_QUEUE) == 0
    assert value(after, "ingest_runs", status="completed") >= 1
    assert value(after, "cache_stale_entries") == 0


def test_sse_streams_are_counted_while_open(web_server, api_token):
    server = web_server(workers=2, METRICS_TOKEN=TOKEN)
    reader = {"Authorization": f"Token {api_token('reader')}"}
    received: list[bytes] = []
    stop = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET", f"{server.base}/users/sse", headers=reader, timeout=10
        ) as response:
            for chunk in response.iter_bytes():
                received.append(chunk)
                if stop.is_set():
                    return

    before = scrape(server.base)
    assert value(before, "sse_open_streams") == 0
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    wait_until(lambda: value(scrape(server.base), "sse_open_streams") == 1)

    user_create(first_name="Ann", last_name="Lee", email_address="ann@example.com")
    wait_until(lambda: any(b"user.created" in chunk for chunk in received))
    sent = value(scrape(server.base), "sse_events_sent_total") - value(
        before, "sse_events_sent_total"
    )
    assert sent >= 1

    stop.set()
    user_create(first_name="Bob", last_name="Ray", email_address="bob@example.com")
    listener.join(timeout=10)
    wait_until(lambda: value(scrape(server.base), "sse_open_streams") == 0)


def test_metrics_need_the_bearer_token(web_server):
    server = web_server(workers=1, METRICS_TOKEN=TOKEN)
    url = f"{server.base}/metrics"

    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Token {TOKEN}"},
        {"Authorization": f"Basic {TOKEN}"},
    ):
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert "Authorization: Bearer" in refused.json()["detail"]
        assert "http_requests_total" not in refused.text

    accepted = httpx.get(url, headers={"Authorization": f"bearer {TOKEN}"})
    assert accepted.status_code == 200
    assert "http_requests_total" in accepted.text


def test_metrics_are_off_without_a_token(web_server):
    server = web_server(workers=1, METRICS_TOKEN="")

    response = httpx.get(f"{server.base}/metrics", headers={"Authorization": "Bearer any"})

    assert response.status_code == 403
    assert "set METRICS_TOKEN" in response.json()["detail"]
    assert "WWW-Authenticate" not in response.headers
