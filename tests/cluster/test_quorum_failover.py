"""A quorum ingest queue on a three-node RabbitMQ cluster of the tests' own
(tests/cluster/rabbitmq.py): the node the producer and the worker are connected to is stopped
while a file is being published, and every row still arrives."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cluster.rabbitmq import RabbitCluster, rabbitmq_installed
from tests.support.data import HEADER
from tests.support.environment import ROOT, RUN_ID, subprocess_env
from tests.support.servers import Worker
from tests.support.waits import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

# Small batches, so that publishing lasts longer than stopping a node takes.
ROWS, BATCH = 30_000, 20


@pytest.fixture(scope="module")
def rabbit_cluster():
    if not rabbitmq_installed():
        pytest.skip("rabbitmq-server not installed (/usr/lib/rabbitmq/bin): no broker cluster")
    cluster = RabbitCluster(size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_a_node_stopped_while_publishing_loses_no_row(rabbit_cluster, write_csv, tmp_path):
    from ingest.models import IngestBatch, IngestRun
    from users.models import User

    env = {
        "CELERY_BROKER_URL": rabbit_cluster.urls(),  # node 0 first: both connect to it
        "INGEST_QUEUE_TYPE": "quorum",
        "INGEST_QUEUE": f"ingest-{RUN_ID}-cluster",
    }
    lines = [
        f"{i},First{i},Last{i},u{i}@example.com,1600000000000,-1,-1,-1" for i in range(1, ROWS + 1)
    ]
    path = write_csv(HEADER + "\n" + "\n".join(lines) + "\n")
    worker = Worker(tmp_path / "worker.log", env["INGEST_QUEUE"], f"cluster-{RUN_ID}", **env)
    try:
        publisher = subprocess.Popen(
            [sys.executable, "manage.py", "publish_csv", path, "--batch-size", str(BATCH), "--wait",
             "--timeout", "240"],
            cwd=ROOT, env=subprocess_env(**env), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        # Mid-publish: some batches stored, the file not yet all published.
        wait_until(lambda: IngestBatch.objects.count() >= 5, timeout=60)
        rabbit_cluster.stop_node(0)
        assert rabbit_cluster.running_nodes(1) == sorted(rabbit_cluster.names[1:])
        # The node went down while the file was still being published.
        assert IngestRun.objects.get().status == IngestRun.Status.PUBLISHING

        output, _ = publisher.communicate(timeout=300)
    finally:
        worker.stop()

    assert publisher.returncode == 0, output[-3000:]
    assert "Will retry using next failover" in worker.log()
    run = IngestRun.objects.get()
    assert run.status == IngestRun.Status.COMPLETED, output[-3000:]
    assert User.objects.count() == ROWS, worker.log()[-3000:]
    assert set(User.objects.values_list("id", flat=True)) == set(range(1, ROWS + 1))
