"""Fixtures of the operations tests: workers of their own, queues, ports nothing answers on."""

from __future__ import annotations

import os
import socket

import pytest
from django.conf import settings
from django.test import override_settings

from tests.support.servers import Worker


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never says a word (a hung dependency)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture
def start_worker(tmp_path, django_db_setup, ingest_queue):
    """Start Celery workers with extra environment; every one is stopped after the test.

    Depends on `ingest_queue` so the workers are stopped before that queue is deleted (a
    running worker would declare it again)."""
    workers: list[Worker] = []

    def start(queue: str, concurrency: int = 1, **env: str) -> Worker:
        name = f"ops{len(workers)}-{os.getpid()}"
        worker = Worker(tmp_path / f"worker-{len(workers)}.log", queue, name, concurrency, **env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def ingest_queue():
    """A queue of this test's own (the session's worker must not take its batches); deleted."""
    queue = f"{settings.INGEST_QUEUE}-ops"
    with override_settings(INGEST_QUEUE=queue):
        yield queue
    from viswals.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)
