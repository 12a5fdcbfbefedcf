"""Bulk imports: a big file into an empty or small users table loads with the primary key only
and builds the other indexes once at the end; nothing can leave the table without them."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from ingest.bulk import ingest_indexes_restore
from ingest.checks import check_users_indexes, users_indexes_health
from ingest.indexes import declared_indexes, users_indexes_status
from ingest.models import IngestRun
from ingest.services import ingest_run_start
from tests.support.data import HEADER
from tests.support.servers import Worker
from tests.support.waits import wait_until
from users.email_index import email_holds
from users.models import User
from users.selectors import user_contains
from viswals import health

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _small_bulk_threshold(settings):
    settings.INGEST_BULK_MIN_ROWS = 10  # a 10-line file counts as big here


def rows_csv(ids, name: str = "Ann") -> str:
    return (
        HEADER
        + "\n"
        + "".join(f"{i},{name}{i},Lee,u{i}@example.com,1600000000000,-1,-1,-1\n" for i in ids)
    )


def search_emails(text: str) -> list[int]:
    """The ids the `email` substring filter serves (candidates, checked)."""
    found = user_contains(queryset=User.objects.all(), name=False, email=True, text=text)
    return sorted(user.id for user in found if email_holds(user.email_address, text))


def publish(path: str, batch_size: int = 5) -> IngestRun:
    call_command("publish_csv", path, "--batch-size", str(batch_size), "--wait", "--timeout", "60")
    return IngestRun.objects.latest("id")


def index_oids() -> dict[str, int]:
    names = [index.name for index in declared_indexes()]
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, oid FROM pg_class WHERE relname = ANY(%s)", [names])
        return dict(cursor.fetchall())


def start_dead_bulk_run() -> IngestRun:
    """What a publish_csv killed right after starting a bulk run leaves: indexes dropped."""
    run = ingest_run_start(file_name="big.csv", file_size=1, checksum="x", batch_size=5, rows=50)
    assert run.bulk and users_indexes_status().missing
    long_ago = timezone.now() - timedelta(hours=1)
    IngestRun.objects.filter(id=run.id).update(started_at=long_ago)
    return run


def test_big_import_into_empty_table_ends_with_every_index_valid(celery_worker_process, write_csv):
    later = "3,Later,Lee,u3@example.com,1600000000000,-1,-1,-1\n"  # id 3 again, a later line
    path = write_csv(rows_csv(range(1, 21)) + later)
    run = publish(path)

    assert run.bulk
    assert (run.status, run.rows_stored, run.rows_rejected) == ("completed", 21, 0)
    assert run.stored_at <= run.finished_at
    status = users_indexes_status()
    assert status.complete and not status.missing and not status.invalid
    assert User.objects.count() == 20
    assert User.objects.get(id=3).first_name == "Later"
    # The addresses' blind indexes were built too (users.email_index).
    assert search_emails("U19@EXAMPLE") == [19]
    assert search_emails("@example.com") == list(range(1, 21))

    again = publish(path)  # a re-run (every row an update) ends in the same state
    assert again.status == "completed" and users_indexes_status().complete
    assert User.objects.count() == 20 and User.objects.get(id=3).first_name == "Later"


def test_small_import_into_big_table_keeps_its_indexes(celery_worker_process, write_csv):
    publish(write_csv(rows_csv(range(1, 41))))
    before = index_oids()

    run = publish(write_csv(rows_csv(range(100, 112))))  # 12 lines into 40 users

    assert not run.bulk and run.status == "completed"
    assert index_oids() == before, "an index was dropped and built again"
    assert User.objects.count() == 52


def test_blank_lines_do_not_make_a_small_file_a_bulk_run(celery_worker_process, write_csv):
    before = index_oids()
    blank = "\n" * 40 + " \t\r\n" * 20 + "\x1c\n" * 20 + "\u3000\n" * 20
    path = write_csv(rows_csv([1, 2]) + blank + "3,Cy,Day,c@x.com,1600000000000,-1,-1,-1\n")

    run = publish(path)

    assert not run.bulk and run.status == "completed" and run.rows_stored == 3
    assert index_oids() == before, "the indexes were dropped for three rows"


@pytest.mark.parametrize("restored_by", ["next run", "worker start", "migrate"])
def test_indexes_a_dead_bulk_run_left_out_are_restored(
    celery_worker_process, write_csv, tmp_path, restored_by
):
    User.objects.bulk_create(
        [User(id=i, email_address=f"u{i}@x.com", created_at=timezone.now()) for i in range(1, 30)]
    )
    start_dead_bulk_run()
    warning = check_users_indexes(databases=["default"])
    assert [w.id for w in warning] == ["ingest.W001"]
    assert "migrate" in warning[0].hint  # the run is dead: nothing else will build them

    if restored_by == "next run":
        publish(write_csv(rows_csv([1, 2])))  # small: not a bulk run itself
    elif restored_by == "worker start":
        Worker(tmp_path / "worker.log", "unused-queue", "restore", concurrency=1).stop()
    else:
        call_command("migrate", "--noinput", verbosity=0)

    assert users_indexes_status().complete
    assert check_users_indexes(databases=["default"]) == []


def test_a_run_whose_index_builder_died_is_completed_by_the_next_worker(
    celery_worker_process, tmp_path
):
    run = start_dead_bulk_run()
    # Its last batch was stored, then the worker building the indexes was killed.
    IngestRun.objects.filter(id=run.id).update(status=IngestRun.Status.INDEXING)

    Worker(tmp_path / "worker.log", "unused-queue", "finish", concurrency=1).stop()

    run.refresh_from_db()
    assert run.status == "completed" and run.finished_at is not None
    assert users_indexes_status().complete


def test_api_reads_and_writes_work_while_a_bulk_run_has_the_indexes_out(celery_worker_process):
    User.objects.bulk_create(
        [User(id=i, first_name=f"Zed{i}", email_address=f"z{i}@x.com", created_at=timezone.now())
         for i in range(1, 6)]
    )  # fmt: skip
    run = ingest_run_start(file_name="big.csv", file_size=1, checksum="x", batch_size=5, rows=50)
    assert run.bulk and users_indexes_status().missing
    assert users_indexes_health()["bulk_run"] == run.id
    admin = get_user_model().objects.create_superuser("bulk-admin", "a@x.com", "pw")
    client = APIClient()
    client.force_authenticate(admin)

    listed = client.get("/users", {"name": "zed3"})
    created = client.post(
        "/users",
        {"first_name": "New", "last_name": "One", "email_address": "n@x.com"},
        format="json",
    )
    deleted = client.delete("/users/1")

    assert listed.status_code == 200, listed.content
    assert [u["id"] for u in listed.json()["results"]] == [3]
    assert created.status_code == 201, created.content
    assert deleted.status_code == 204
    assert "bulk import" in check_users_indexes(databases=["default"])[0].hint


def test_a_running_worker_restores_indexes_a_dead_bulk_run_left_out(tmp_path):
    worker = Worker(
        tmp_path / "worker.log", "unused-queue", "watch", concurrency=1,
        INGEST_INDEX_CHECK_INTERVAL="0.5",
    )  # fmt: skip
    try:
        # After the worker's start: only its periodic check can help. While the run is alive,
        # the check leaves its indexes out (no condition to wait on: three checks' time).
        run = ingest_run_start(
            file_name="big.csv", file_size=1, checksum="x", batch_size=5, rows=50
        )
        time.sleep(1.5)
        assert run.bulk and users_indexes_status().missing

        IngestRun.objects.filter(id=run.id).update(started_at=timezone.now() - timedelta(hours=1))
        wait_until(lambda: users_indexes_status().complete, 30, "indexes not restored")
    finally:
        worker.stop()
    assert "built the users indexes left out by a bulk import" in worker.log()


def readyz(client, monkeypatch) -> tuple[int, dict]:
    monkeypatch.setattr(health, "_readiness", health.Readiness())  # a fresh check, not a reuse
    response = client.get("/readyz")
    return response.status_code, response.json()


def test_readyz_says_degraded_while_indexes_are_missing_outside_a_bulk_run(client, monkeypatch):
    run = ingest_run_start(file_name="big.csv", file_size=1, checksum="x", batch_size=5, rows=50)
    assert run.bulk and users_indexes_status().missing
    assert readyz(client, monkeypatch) == (200, {"status": "ok"})  # the bulk run wants them out

    IngestRun.objects.filter(id=run.id).update(started_at=timezone.now() - timedelta(hours=1))
    assert readyz(client, monkeypatch) == (
        200,
        {"status": "degraded", "degraded": ["users_indexes"]},
    )

    ingest_indexes_restore()
    assert readyz(client, monkeypatch) == (200, {"status": "ok"})
