"""The ingest queue's type (classic or quorum), several broker URLs, and the worker's consumer
(viswals/celery_steps.py), which sets up native delayed delivery through the node it is
connected to."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from celery.worker.consumer import Consumer
from kombu import Connection

from tests.support.data import HEADER
from tests.support.environment import ROOT, settings_value, subprocess_env
from viswals import celery_steps
from viswals.celery import app


def test_the_consumer_subclass_is_checked_against_the_installed_celery():
    # A new Celery must be read against viswals/celery_steps.py before this pin moves.
    assert celery_steps.installed_version() == celery_steps.WRITTEN_FOR
    assert celery_steps.STOCK_STEP in Consumer.Blueprint.default_steps
    steps = celery_steps.ClusterConsumer.Blueprint.default_steps
    assert celery_steps.STOCK_STEP not in steps
    assert "viswals.celery_steps:ConnectedNodeDelayedDelivery" in steps
    assert app.conf.worker_consumer == "viswals.celery_steps:ClusterConsumer"


def test_the_queue_type_is_classic_by_default_and_quorum_on_request():
    expression = (
        "settings.CELERY_TASK_DEFAULT_QUEUE_TYPE, "
        "getattr(settings, 'CELERY_TASK_DEFAULT_EXCHANGE_TYPE', 'direct'), "
        "getattr(settings, 'CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE', 'direct')"
    )
    classic = settings_value(expression, DJANGO_DEBUG="true")
    quorum = settings_value(expression, DJANGO_DEBUG="true", INGEST_QUEUE_TYPE="quorum")
    wrong = settings_value(expression, DJANGO_DEBUG="true", INGEST_QUEUE_TYPE="mirrored")

    assert classic.stdout.split() == ["classic", "direct", "direct"], classic.stderr
    # Native delayed delivery (retries with a countdown) needs a topic exchange.
    assert quorum.stdout.split() == ["quorum", "topic", "topic"], quorum.stderr
    assert wrong.returncode != 0
    assert "INGEST_QUEUE_TYPE must be classic or quorum, not 'mirrored'" in wrong.stderr


def test_several_broker_urls_fail_over_in_turn(silent_port):
    """A node that does not answer is passed over for the next URL (kombu's failover)."""
    url = f"amqp://guest:guest@127.0.0.1:{silent_port}//;{app.conf.broker_url}"
    with Connection(
        url, failover_strategy=app.conf.broker_failover_strategy, connect_timeout=0.5
    ) as connection:
        connection.ensure_connection(max_retries=2, interval_start=0, interval_step=0)
        assert connection.connected
        assert connection.as_uri() == Connection(app.conf.broker_url).as_uri()


@pytest.fixture
def quorum_queue(settings):
    """A quorum queue of this test's own, with its topic exchange and Celery's delayed-delivery
    exchanges and queues; all deleted after."""
    queue = f"{settings.INGEST_QUEUE}-quorum"
    yield queue
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_delete(queue)
        channel.exchange_delete(queue)
        for level in range(28):
            channel.queue_delete(f"celery_delayed_{level}")
            channel.exchange_delete(f"celery_delayed_{level}")
        channel.exchange_delete("celery_delayed_delivery")


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_quorum_queue_worker_with_a_dead_node_listed_consumes_without_retrying_it(
    start_worker, quorum_queue, silent_port, write_csv, settings
):
    """Celery's own step set up delayed delivery through every listed URL, retrying a node
    that does not answer (4 attempts, each waiting out the connect timeout: ~17 s with no
    consumption). Ours uses the node the worker connected to."""
    from ingest.models import IngestRun
    from users.models import User

    env = {
        "INGEST_QUEUE": quorum_queue,
        "INGEST_QUEUE_TYPE": "quorum",
        "CELERY_BROKER_URL": (
            f"{settings.CELERY_BROKER_URL};amqp://guest:guest@127.0.0.1:{silent_port}//"
        ),
    }
    worker = start_worker(quorum_queue, **env)
    path = write_csv(f"{HEADER}\n1,Ann,Lee,ann@example.com,1600000000123,-1,-1,-1\n")
    # The producer must declare the queue as the workers do (a classic declaration of a quorum
    # queue fails): it runs with the same environment.
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "manage.py", "publish_csv", path, "--wait", "--timeout", "60"],
        cwd=ROOT, env=subprocess_env(**env), check=True, capture_output=True, timeout=90,
    )  # fmt: skip
    took = time.monotonic() - started

    assert IngestRun.objects.get().status == IngestRun.Status.COMPLETED
    assert User.objects.filter(id=1).exists()
    assert "Retrying delayed delivery setup" not in worker.log()
    assert "delayed delivery not set up" not in worker.log()
    assert took < 30, f"publish to stored took {took:.1f}s"
    with app.connection_for_write() as connection:
        # It is a quorum queue: declaring it classic fails (406 PRECONDITION_FAILED).
        with pytest.raises(Exception, match="x-queue-type"):
            connection.default_channel.queue_declare(quorum_queue, durable=True, auto_delete=False)
