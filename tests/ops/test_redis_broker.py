"""The broker is a URL: the whole pipeline runs with Redis as the broker instead of RabbitMQ
(publish_csv and a worker process both pointed at redis://), with the same end state."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from django.conf import settings

from ingest.models import IngestRun
from tests.support.data import HEADER
from tests.support.environment import ROOT, RUN_ID, subprocess_env
from users.models import User

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

BROKER_DB = 13  # a database of its own: kombu's keys never mix with the cache's


@pytest.fixture
def redis_broker():
    url = f"redis://127.0.0.1:6379/{BROKER_DB}"
    queue = f"{settings.INGEST_QUEUE}-redis"
    yield url, queue
    client = redis.Redis.from_url(url)
    # This run's queue (and its priority lists), its binding, and the worker's pidbox entries.
    for key in client.scan_iter(match=f"*{queue}*"):
        client.delete(key)
    for key in client.scan_iter(match="_kombu.binding.*"):
        for member in client.smembers(key):
            if RUN_ID.encode() in member:
                client.srem(key, member)
    for exchange in client.zrange("_kombu.binding_deadlines", 0, -1):
        if not client.exists(b"_kombu.binding." + exchange):
            client.zrem("_kombu.binding_deadlines", exchange)
    client.close()


def test_ingest_runs_end_to_end_with_redis_as_the_broker(
    redis_broker, start_worker, write_csv, redis_client
):
    url, queue = redis_broker
    start_worker(queue, concurrency=2, CELERY_BROKER_URL=url)
    path = write_csv(
        f"{HEADER}\n"
        "1,Ann,Lee,ann@example.com,1600000000000,-1,-1,-1\n"
        "2,Bob,Ray,bob@example.com,1600000000000,-1,-1,-1\n"
        "3,Bad,Email,not-an-email,1600000000000,-1,-1,-1\n"
        "1,Ann,Lee-Moss,ann@example.com,1600000000000,-1,-1,-1\n"
        "4,Cy,Moss,cy@example.com,1600000000000,-1,-1,-1\n"
    )
    publish = subprocess.run(
        [sys.executable, "manage.py", "publish_csv", path, "--batch-size", "2", "--wait"],
        cwd=ROOT,
        env=subprocess_env(CELERY_BROKER_URL=url, INGEST_QUEUE=queue),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert publish.returncode == 0, publish.stdout + publish.stderr
    assert "completed: 4 stored, 1 rejected" in publish.stdout

    run = IngestRun.objects.get()
    assert (run.rows_published, run.rows_stored, run.rows_rejected) == (5, 4, 1)
    assert sorted(User.objects.values_list("id", "last_name")) == [
        (1, "Lee-Moss"),
        (2, "Ray"),
        (4, "Moss"),
    ]
    from users.cache import user_key

    assert redis_client.exists(user_key(1))
    # Every message was taken and acknowledged: nothing left on the queue.
    broker = redis.Redis.from_url(url)
    assert broker.llen(queue) == 0
    broker.close()
    assert os.environ.get("CELERY_BROKER_URL") != url  # this process kept its own broker
