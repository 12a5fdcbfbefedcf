"""Several broker URLs (`CELERY_BROKER_URL="a;b;c"`, the nodes of one RabbitMQ cluster): a worker
started while the first node does not answer (its host is down: connecting times out) moves on
to the next node and consumes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

from tests.support.data import HEADER
from tests.support.environment import ROOT, RUN_ID, subprocess_env
from tests.support.servers import Worker
from users.models import User

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


def test_a_worker_whose_first_broker_does_not_answer_consumes_from_the_next(
    silent_port, ingest_queue, write_csv, tmp_path
):
    # The Procfile's worker (mingle on: its start-up hello goes through a connection of the
    # producer pool, which used to spend its whole connect timeout on the first node).
    urls = f"amqp://guest:guest@127.0.0.1:{silent_port}//;{settings.CELERY_BROKER_URL}"
    # A 1 s connect timeout (4 s by default): the same moves, in a quarter of the time.
    worker = Worker(
        tmp_path / "worker.log", ingest_queue, f"urls-{RUN_ID}", all_steps=True,
        CELERY_BROKER_URL=urls, CELERY_BROKER_CONNECTION_TIMEOUT="1",
    )  # fmt: skip
    try:
        path = write_csv(f"{HEADER}\n1,Ann,Lee,ann@example.com,1600000000000,-1,-1,-1\n")
        publish = subprocess.run(
            [sys.executable, "manage.py", "publish_csv", path, "--wait", "--timeout", "60"],
            cwd=ROOT, env=subprocess_env(INGEST_QUEUE=ingest_queue), capture_output=True,
            text=True, timeout=90,
        )  # fmt: skip
    finally:
        worker.stop()
    assert publish.returncode == 0, publish.stdout + publish.stderr + worker.log()[-3000:]
    assert list(User.objects.values_list("id", flat=True)) == [1]
    assert "Will retry using next failover" in worker.log()
