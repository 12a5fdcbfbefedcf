"""`publish_csv --wait` through real restarts of PostgreSQL, RabbitMQ and Redis: it reconnects
and keeps waiting (the workers recover and store every row), and gives up with one line, no
traceback, when PostgreSQL stays away past INGEST_WAIT_DEPENDENCY_PATIENCE."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from ingest.models import IngestBatch, IngestRun
from tests.support.data import HEADER
from tests.support.environment import ROOT, TEST_ENV, subprocess_env
from tests.support.restarts import (
    HAVE_POSTGRESQL,
    HAVE_RABBITMQ,
    HAVE_REDIS,
    restart_postgresql,
    restart_rabbitmq,
    restart_redis,
    start_redis,
    stop_redis,
)
from tests.support.waits import wait_until
from users.models import StaleCacheEntry, User

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.restarts_services,
    pytest.mark.django_db(transaction=True),
]

ROWS = 20_000
BATCH = 20  # many small batches: the workers are still busy when the service restarts


def start_publish(path: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "publish_csv", path, "--batch-size", str(BATCH), "--wait",
         "--timeout", "300"],
        cwd=ROOT, env=subprocess_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_until_waiting(producer: subprocess.Popen) -> IngestRun:
    """Return the run once it is published and the producer waits for the workers."""

    def published() -> IngestRun | None:
        assert producer.poll() is None, producer.communicate()
        return IngestRun.objects.filter(published_at__isnull=False).first()

    run = wait_until(published, 120, "publishing did not finish")
    assert run.status == IngestRun.Status.PUBLISHED, "the workers finished too early"
    return run


def users_csv(write_csv) -> str:
    lines = "".join(
        f"{i},N{i},L{i},u{i}@example.com,1600000000000,-1,-1,-1\n" for i in range(1, ROWS + 1)
    )
    return write_csv(f"{HEADER}\n{lines}")


def assert_waited_through_it(producer: subprocess.Popen, restarted_at) -> None:
    stdout, stderr = producer.communicate(timeout=300)
    assert producer.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    run = IngestRun.objects.get()
    assert run.status == IngestRun.Status.COMPLETED, run.error
    assert run.finished_at > restarted_at  # the restart really came while waiting
    assert (run.rows_published, run.rows_stored, run.rows_rejected) == (ROWS, ROWS, 0)
    assert User.objects.count() == ROWS
    assert IngestBatch.objects.filter(run=run, status="stored").count() == ROWS // BATCH
    assert f"completed: {ROWS} stored, 0 rejected" in stdout


@pytest.mark.skipif(not HAVE_POSTGRESQL, reason="needs the local PostgreSQL cluster")
def test_wait_reconnects_through_a_postgresql_restart(celery_worker_process, write_csv):
    producer = start_publish(users_csv(write_csv))
    try:
        wait_until_waiting(producer)
        restarted_at = timezone.now()
        restart_postgresql()
    except BaseException:
        producer.kill()
        raise
    assert_waited_through_it(producer, restarted_at)


@pytest.mark.skipif(not HAVE_RABBITMQ, reason="needs the local RabbitMQ")
def test_wait_goes_on_through_a_rabbitmq_restart(celery_worker_process, write_csv):
    producer = start_publish(users_csv(write_csv))
    try:
        wait_until_waiting(producer)
        restarted_at = timezone.now()
        restart_rabbitmq()
    except BaseException:
        producer.kill()
        raise
    assert_waited_through_it(producer, restarted_at)


@pytest.mark.skipif(not HAVE_REDIS, reason="needs the local Redis")
def test_wait_goes_on_through_a_redis_restart_and_repairs_the_cache(
    celery_worker_process, write_csv
):
    producer = start_publish(users_csv(write_csv))
    try:
        wait_until_waiting(producer)
        restarted_at = timezone.now()
        restart_redis()
    except BaseException:
        producer.kill()
        raise
    assert_waited_through_it(producer, restarted_at)
    assert not StaleCacheEntry.objects.exists()  # repaired by later batches or at the end


@pytest.mark.skipif(not HAVE_REDIS, reason="needs the local Redis")
def test_end_of_wait_cache_repair_waits_for_redis_to_come_back(settings, stored_user_id):
    """repair_cache_after_run, as --wait calls it at the end, while Redis restarts."""
    from ingest.publishing import repair_cache_after_run

    settings.INGEST_WAIT_DEPENDENCY_PATIENCE = 60
    StaleCacheEntry.objects.create(user_id=stored_user_id)
    dump = stop_redis()
    left: list[int] = []
    try:
        repair = threading.Thread(target=_in_thread, args=(repair_cache_after_run, left))
        repair.start()
        time.sleep(1)  # the repair finds Redis down and keeps trying
        assert repair.is_alive()
    finally:
        start_redis(dump)
    repair.join(timeout=60)
    assert left == [0]
    assert not StaleCacheEntry.objects.exists()


def _in_thread(action, results: list) -> None:
    try:
        results.append(action())
    finally:
        connection.close()  # this thread's own connection


@pytest.fixture
def stored_user_id() -> int:
    return User.objects.create(
        id=1, first_name="A", last_name="B", email_address="a@b.co", created_at=timezone.now()
    ).id


@pytest.mark.skipif(not HAVE_POSTGRESQL, reason="needs the local PostgreSQL cluster")
def test_wait_gives_up_in_one_line_when_postgresql_stays_away(write_csv):
    """Its database refuses connections for longer than the patience (only this test run's
    database: others on the machine are not disturbed)."""
    queue = f"{TEST_ENV['INGEST_QUEUE']}-unconsumed"  # nobody stores the batch: it waits
    producer = start_publish(
        write_csv(f"{HEADER}\n1,Ann,Lee,ann@example.com,1600000000000,-1,-1,-1\n"),
        INGEST_QUEUE=queue,
        INGEST_WAIT_DEPENDENCY_PATIENCE="2",
    )
    database = connection.settings_dict["NAME"]
    try:
        run = wait_until_waiting(producer)
        # Refused from another database (PostgreSQL will not refuse the one a session is on).
        admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            database,
        )
        stdout, stderr = producer.communicate(timeout=60)
    finally:
        producer.kill()
        admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
        connection.close()  # terminated above
        _delete_queue(queue)
    assert producer.returncode == 1
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("CommandError: stopped waiting: PostgreSQL unreachable for 2s ("), last
    assert f"run {run.id} goes on in the workers" in last


def admin(sql: str, *params: str) -> None:
    """Run a statement connected to the `postgres` database."""
    import psycopg

    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        password=db["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as admin_connection:
        admin_connection.execute(sql, params or None)


def _delete_queue(queue: str) -> None:
    from viswals.celery import app

    with app.connection_for_write() as broker:
        broker.default_channel.queue_delete(queue)
