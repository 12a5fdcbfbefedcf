"""Restarts lose nothing: a worker stopped mid-ingest (SIGTERM) and a web server stopped with
a request in flight and a stream open."""

from __future__ import annotations

import json
import threading

import httpx
import psutil
import pytest
from django.core.management import call_command

from ingest.models import IngestBatch, IngestRun
from ingest.publishing import wait_for_run
from tests.support.data import HEADER
from tests.support.waits import wait_until
from users.models import User

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

ROWS, BATCH = 6000, 100


def test_worker_stopped_mid_ingest_loses_and_repeats_nothing(start_worker, ingest_queue, write_csv):
    path = write_csv(
        HEADER
        + "\n"
        + "".join(
            f"{i},First{i},Last{i},user{i}@example.com,1600000000000,-1,-1,-1\n"
            for i in range(1, ROWS + 1)
        )
    )
    first = start_worker(ingest_queue, LOG_FORMAT="json")
    call_command("publish_csv", path, "--batch-size", str(BATCH))
    run = IngestRun.objects.get()

    wait_until(
        lambda: IngestBatch.objects.filter(run=run, status="stored").count() >= 3,
        30,
        "the first worker stored nothing",
        interval=0.02,  # stop it early in the run: most batches must be left for the second
    )
    took = first.stop()
    done_by_first = IngestBatch.objects.filter(run=run).exclude(status="started").count()

    log = first.log()
    raced = first.process.returncode != 0
    if raced:
        # A known race of Celery 5.7's prefork pool, seen about once in ten runs here: a
        # prefetched batch delivered just after the warm shutdown began is handed to a pool
        # that no longer dispatches, and the worker waits for it until it is killed (as a
        # process manager does after its grace period). Acks are late, so that batch was never
        # started and goes back to the queue: what this test is about (nothing lost, nothing
        # stored twice) is checked below either way.
        _, _, after_shutdown = log.partition("Warm shutdown")
        assert "received" in after_shutdown, log[-2000:]
    else:
        assert took < 20
    assert done_by_first < ROWS // BATCH, "the first worker finished everything: nothing tested"
    # Warm shutdown: the batch in hand was finished, none is left half-done.
    assert not IngestBatch.objects.filter(run=run, status="started").exists()

    start_worker(ingest_queue)
    run = wait_for_run(run_id=run.id, timeout=60)

    assert run.status == IngestRun.Status.COMPLETED
    assert (run.rows_published, run.rows_stored, run.rows_rejected) == (ROWS, ROWS, 0)
    batches = IngestBatch.objects.filter(run=run)
    assert batches.count() == ROWS // BATCH
    assert set(batches.values_list("status", flat=True)) == {"stored"}
    attempts = set(batches.values_list("attempts", flat=True))
    # After the race above, the batch the stuck pool may have run without telling the worker
    # comes back once more and is skipped as stored (its rows are counted once, above).
    assert attempts == {1} or (raced and attempts == {1, 2}), f"a batch was tried {attempts}"
    assert User.objects.count() == ROWS
    assert User.objects.filter(source_run_id=run.id).count() == ROWS

    # The stopped worker logged JSON, its task lines carrying the run id and batch number.
    records = [json.loads(line) for line in first.log().splitlines() if line.startswith("{")]
    task_lines = [r for r in records if r.get("logger") == "ingest.tasks"]
    assert task_lines and all(r["run_id"] == run.id and r["batch"] >= 1 for r in task_lines)
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)


def connected_to(server, port: int) -> bool:
    """Whether a process of the server holds a connection to `port` on loopback."""
    parent = psutil.Process(server.process.pid)
    return any(
        connection.raddr and connection.raddr.port == port
        for process in (parent, *parent.children(recursive=True))
        for connection in process.net_connections(kind="tcp")
    )


def test_web_server_drains_requests_and_closes_streams_on_sigterm(
    web_server, silent_port, api_token
):
    # A broker that never answers makes /readyz take its full timeout: a request in flight.
    server = web_server(
        workers=1, CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{silent_port}//"
    )
    outcome: dict[str, object] = {}
    stream_opened, stream_ended = threading.Event(), threading.Event()
    reader = {"Authorization": f"Token {api_token('reader')}"}

    def slow_request() -> None:
        outcome["response"] = httpx.get(f"{server.base}/readyz", timeout=10)

    def stream() -> None:
        try:
            with httpx.stream(
                "GET", f"{server.base}/users/sse", headers=reader, timeout=20
            ) as response:
                for chunk in response.iter_bytes():
                    if b"stream-open" in chunk:
                        stream_opened.set()
        except httpx.HTTPError:
            pass
        stream_ended.set()

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    assert stream_opened.wait(timeout=10), "the stream did not open"
    requester = threading.Thread(target=slow_request, daemon=True)
    requester.start()
    # In flight: the server is in /readyz's broker check, connected to the silent port.
    wait_until(lambda: connected_to(server, silent_port), 10, "/readyz did not reach the broker")
    took = server.stop()
    requester.join(timeout=10)

    response = outcome["response"]
    assert response.status_code == 503  # answered in full, not cut off
    assert response.json()["failing"] == ["broker"]
    assert stream_opened.is_set() and stream_ended.wait(timeout=5)
    assert took < 8, f"shutdown took {took:.1f}s"


def test_stopping_the_server_with_streams_open_is_a_normal_stop(web_server, api_token):
    # Two streams, as a live page (/users/live) and an API client hold them, on two workers.
    server = web_server(workers=2, graceful_timeout=5, LOG_LEVEL="INFO")
    reader = {"Authorization": f"Token {api_token('reader')}"}
    opened = [threading.Event(), threading.Event()]
    ended = [threading.Event(), threading.Event()]

    def stream(n: int) -> None:
        try:
            with httpx.stream(
                "GET", f"{server.base}/users/sse", headers=reader, timeout=20
            ) as response:
                for chunk in response.iter_bytes():
                    if b"stream-open" in chunk:
                        opened[n].set()
        except httpx.HTTPError:
            pass
        ended[n].set()

    for n in range(2):
        threading.Thread(target=stream, args=(n,), daemon=True).start()
    assert all(event.wait(timeout=10) for event in opened), "a stream did not open"

    took = server.stop()

    assert all(event.wait(timeout=5) for event in ended)
    # Closed at once rather than after the graceful timeout (5 s), and nothing logged as an
    # error: uvicorn's "Cancel 1 running task(s), timeout graceful shutdown exceeded" was.
    assert took < 4, f"shutdown took {took:.1f}s"
    log = server.log()
    assert "Shutting down" in log
    errors = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line]
    assert not errors, log
