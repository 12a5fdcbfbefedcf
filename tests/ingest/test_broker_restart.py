"""A RabbitMQ restart in the middle of publish_csv loses and repeats nothing.

The broker is really stopped and started (rabbitmqctl stop_app / start_app): the producer
re-publishes with its retry policy, the worker reconnects and gets unacknowledged batches
redelivered, and the end state is exact.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from django.utils import timezone

from ingest.models import IngestBatch, IngestRun
from tests.support.data import HEADER
from tests.support.environment import ROOT, subprocess_env
from tests.support.restarts import HAVE_RABBITMQ, rabbitmqctl
from tests.support.waits import wait_until
from users.models import User

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.restarts_services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not HAVE_RABBITMQ, reason="needs the local RabbitMQ"),
]

ROWS = 10_000


def publishing(producer: subprocess.Popen) -> bool:
    """Whether batches are being published (a producer that exited fails the wait at once)."""
    assert producer.poll() is None, producer.communicate()
    return IngestBatch.objects.exists()


def test_broker_restart_while_publishing_loses_and_repeats_nothing(
    celery_worker_process, write_csv, tmp_path
):
    lines = "".join(
        f"{i},N{i},L{i},u{i}@example.com,1600000000000,-1,-1,-1\n" for i in range(1, ROWS + 1)
    )
    path = write_csv(f"{HEADER}\n{lines}")
    producer = subprocess.Popen(
        [sys.executable, "manage.py", "publish_csv", path, "--batch-size", "5", "--wait",
         "--timeout", "300"],
        cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: publishing(producer), 60, "publishing did not start")
        rabbitmqctl("stop_app")
        stopped_at = timezone.now()
        time.sleep(2)  # deliberately down a while: the producer must notice and retry
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    stdout, stderr = producer.communicate(timeout=300)

    assert producer.returncode == 0, stderr[-3000:]
    run = IngestRun.objects.get()
    assert run.status == IngestRun.Status.COMPLETED, run.error
    assert run.published_at > stopped_at  # the restart really came in the middle of publishing
    assert run.rows_published == ROWS
    assert (run.rows_stored, run.rows_rejected) == (ROWS, 0)
    assert User.objects.count() == ROWS
    # Every batch once: a republished or redelivered message is stored idempotently.
    assert IngestBatch.objects.filter(run=run, status="stored").count() == ROWS // 5
