"""publish_csv → RabbitMQ → a real Celery worker process → PostgreSQL and Redis."""

from __future__ import annotations

import json

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ingest.models import IngestBatch, IngestRun, RejectedRow
from ingest.publishing import ENVELOPE_BYTES, publish_file
from ingest.services import batch_from_message, batch_message
from ingest.tasks import store_batch
from tests.support.broker import queue_bodies, queue_delete
from tests.support.data import HEADER, cached
from tests.support.factories import IngestRunFactory
from tests.support.waits import wait_until
from users.models import User
from users.payloads import user_payload
from users.services import user_create
from users.validation import API_ID_START

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


def publish(path: str, *extra: str, report=None) -> dict:
    args = [path, "--timeout", "60", *extra]
    if report is not None:
        args += ["--report", str(report)]
        call_command("publish_csv", *args)
        return json.loads(report.read_text())
    call_command("publish_csv", *args, "--wait")
    return {}


def wait_for_batches(run: IngestRun, count: int, timeout: float = 30) -> None:
    wait_until(
        lambda: IngestBatch.objects.filter(run=run).exclude(status="started").count() >= count,
        timeout,
        "worker did not store the batches in time",
    )


def wait_for_run_closed(run: IngestRun, timeout: float = 30) -> None:
    """The worker records a failed batch, then closes its run in a second step."""
    wait_until(
        lambda: (
            IngestRun.objects.filter(id=run.id).exclude(status=IngestRun.Status.PUBLISHED).exists()
        ),
        timeout,
        "worker did not close the run in time",
    )


def test_publish_stores_good_rows_and_reports_bad_ones(
    celery_worker_process, write_csv, tmp_path, redis_client
):
    path = write_csv(
        f"{HEADER}\n"
        "1,Ann,Lee,ann@example.com,1600000000123,-1,-1,-1\n"
        '2,"Smith, Jr.",Ray,Bob@Example.COM,1600000000000,1600000005000,1600000006000,1\n'
        "\n"
        "abc,Bad,Id,x@example.com,1600000000000,-1,-1,-1\n"
        "3,Short,Row\n"
        "4,Bad,Email,not-an-email,1600000000000,-1,-1,-1\n"
        "5,Eve,Moss,eve@example.com,,-1,-1,-1\n"
        "6,Zoë,Müller,zoe@example.com,1600000000000,-1,-1,999\n"
    )
    report = publish(path, "--batch-size", "2", report=tmp_path / "report.json")

    assert report["published"] == 7
    assert report["stored"] == 3
    assert [(r["line"], r["reason"]) for r in report["rejected"]] == [
        (5, "id: not an integer: 'abc'"),
        (6, "expected 8 fields, found 3"),
        (7, "email_address: not a valid email address: 'not-an-email'"),
        (8, "created_at: is required"),
    ]
    assert report["rejected"][1]["raw"] == "3,Short,Row"

    ann, bob, zoe = User.objects.order_by("id")
    assert user_payload(bob) == {
        "id": 2,
        "first_name": "Smith, Jr.",
        "last_name": "Ray",
        "email_address": "Bob@example.com",
        "created_at": "2020-09-13T12:26:40Z",
        "deleted_at": "2020-09-13T12:26:45Z",
        "merged_at": "2020-09-13T12:26:46Z",
        "parent_user_id": 1,
    }
    assert user_payload(ann)["created_at"] == "2020-09-13T12:26:40.123000Z"
    assert (zoe.id, zoe.first_name, zoe.parent_user_id) == (6, "Zoë", 999)
    # The cache holds exactly what the database holds.
    for user in (ann, bob, zoe):
        assert cached(user.id) == user_payload(user)

    run = IngestRun.objects.get(id=report["run"])
    assert run.status == IngestRun.Status.COMPLETED
    assert (run.rows_published, run.rows_stored, run.rows_rejected) == (7, 3, 4)
    assert run.batches_published == 4
    assert RejectedRow.objects.filter(run=run).count() == 4


def test_rerunning_a_file_changes_nothing(celery_worker_process, write_csv, redis_client):
    path = write_csv(
        f"{HEADER}\n"
        "10,Ann,Lee,ann@example.com,1600000000000,-1,-1,-1\n"
        "11,Bob,Ray,bob@example.com,1600000000000,-1,-1,-1\n"
        "10,Ann,Lee-Moss,ann@example.com,1600000000000,1600000009000,-1,-1\n"
    )
    publish(path, "--batch-size", "1")
    first = [user_payload(u) for u in User.objects.order_by("id")]
    publish(path, "--batch-size", "2")
    second = [user_payload(u) for u in User.objects.order_by("id")]

    assert first == second
    assert [u["last_name"] for u in second] == ["Lee-Moss", "Ray"]
    assert [cached(u["id"]) for u in second] == second
    assert IngestRun.objects.filter(status=IngestRun.Status.COMPLETED).count() == 2


def test_a_batch_is_cut_when_its_rows_hold_too_much_text(
    celery_worker_process, write_csv, settings
):
    # Room for the first row (341 characters, at most 2,467 bytes) alone.
    settings.INGEST_BATCH_MAX_BYTES = ENVELOPE_BYTES + 2_500
    long_name = "x" * 300  # rejected by the worker (over 255), but it travels first
    path = write_csv(
        f"{HEADER}\n"
        f"1,{long_name},Lee,a@example.com,1600000000000,-1,-1,-1\n"
        "2,Bob,Ray,b@example.com,1600000000000,-1,-1,-1\n"
        "3,Cy,Day,c@example.com,1600000000000,-1,-1,-1\n"
    )
    publish(path)  # the default batch size would put all three in one batch
    run = IngestRun.objects.get()
    assert run.batches_published == 2
    assert (run.rows_stored, run.rows_rejected) == (2, 1)
    assert RejectedRow.objects.get(run=run).reason == "first_name: longer than 255 characters (300)"


def test_messages_of_huge_rows_and_rejects_stay_under_the_batch_bound(write_csv, settings):

    settings.INGEST_BATCH_MAX_BYTES = bound = ENVELOPE_BYTES + 100_000
    settings.INGEST_QUEUE = queue = f"{settings.INGEST_QUEUE}-bounded"  # nobody consumes it
    # Control characters: the most bytes a character can take in a message (seven).
    rows = "".join(
        f"{i},{chr(1) * 5000},L,u{i}@example.com,1600000000000,-1,-1,-1\n" for i in range(1, 13)
    )
    rejects = "".join(f'{i},"{chr(2) * 3000}\n' for i in range(100, 160))  # broken quoting
    path = write_csv(f"{HEADER}\n{rows}{rejects}")
    try:
        result = publish_file(path=path, batch_size=10_000)  # by count: one batch
        bodies = queue_bodies(queue)
    finally:
        queue_delete(queue)

    assert result.batches == len(bodies) > 4
    assert max(len(body) for body in bodies) <= bound
    batches = [batch_from_message(orjson.loads(body)[0][2]) for body in bodies]
    assert sum(len(rows) for rows, _ in batches) == 12
    assert sum(len(rejects) for _, rejects in batches) == 60
    assert any(rows and rejects for rows, rejects in batches)


def test_later_line_wins_when_batches_are_consumed_out_of_order(
    celery_worker_process, redis_client
):
    run = IngestRunFactory(file_name="out-of-order.csv", status=IngestRun.Status.PUBLISHING)
    early = [
        [2, "20", "Old", "Name", "old@example.com", "1600000000000", "-1", "-1", "-1"],
        [3, "21", "Keep", "Me", "keep@example.com", "1600000000000", "-1", "-1", "-1"],
    ]
    late = [[50, "20", "New", "Name", "new@example.com", "1600000000000", "-1", "-1", "-1"]]
    # The later batch is queued and stored first; the earlier one arrives afterwards.
    store_batch.apply_async(
        args=(run.id, 2, batch_message(late, [])), queue=celery_worker_process_queue()
    )
    wait_for_batches(run, 1)
    store_batch.apply_async(
        args=(run.id, 1, batch_message(early, [])), queue=celery_worker_process_queue()
    )
    wait_for_batches(run, 2)

    user = User.objects.get(id=20)
    assert (user.first_name, user.email_address, user.source_line) == ("New", "new@example.com", 50)
    assert cached(20) == user_payload(user)
    assert User.objects.get(id=21).first_name == "Keep"


def celery_worker_process_queue() -> str:
    from django.conf import settings

    return settings.INGEST_QUEUE


def test_api_created_users_never_collide_with_ingested_ids(celery_worker_process, write_csv):
    created_before = user_create(first_name="Api", last_name="First", email_address="a@x.com")
    path = write_csv(
        f"{HEADER}\n"
        "1,Ann,Lee,ann@example.com,1600000000000,-1,-1,-1\n"
        "999999999999999,Max,Id,max@example.com,1600000000000,-1,-1,-1\n"
    )
    publish(path)
    created_after = user_create(first_name="Api", last_name="Second", email_address="b@x.com")

    assert created_before.id >= API_ID_START
    assert created_after.id > created_before.id
    assert User.objects.count() == 4
    assert User.objects.get(id=created_before.id).last_name == "First"


def test_a_batch_that_keeps_failing_is_recorded_as_failed(celery_worker_process):
    run = IngestRunFactory(file_name="broken.csv", rows_published=1, batches_published=1)
    # A message whose rows are not lists: a bug-shaped input must not loop forever.
    store_batch.apply_async(
        args=(run.id, 1, batch_message([42], [])), queue=celery_worker_process_queue()
    )
    wait_for_batches(run, 1)

    batch = IngestBatch.objects.get(run=run, number=1)
    assert batch.status == IngestBatch.Status.FAILED
    assert batch.payload == {"rows": [42], "rejects": []}
    wait_for_run_closed(run)
    run.refresh_from_db()
    assert run.status == IngestRun.Status.FAILED
    assert run.batches_failed == 1


def test_a_message_that_is_not_a_batch_is_recorded_as_failed(celery_worker_process):
    run = IngestRunFactory(file_name="old-format.csv", rows_published=1, batches_published=1)
    # Rows as plain lists (not one batch_message text): recorded, never lost or retried forever.
    rows = [[2, "30", "Ann", "Lee", "ann@example.com", "1600000000000", "-1", "-1", "-1"]]
    store_batch.apply_async(args=(run.id, 1, rows), queue=celery_worker_process_queue())
    wait_for_batches(run, 1)

    batch = IngestBatch.objects.get(run=run, number=1)
    assert batch.status == IngestBatch.Status.FAILED
    assert batch.error.startswith("unreadable batch message")
    wait_for_run_closed(run)
    run.refresh_from_db()
    assert run.status == IngestRun.Status.FAILED


def test_redelivered_batch_is_not_counted_twice(celery_worker_process):
    run = IngestRunFactory(file_name="twice.csv", rows_published=2, batches_published=1)
    rows = [[2, "30", "Ann", "Lee", "ann@example.com", "1600000000000", "-1", "-1", "-1"]]
    rejects = [[3, "expected 8 fields, found 2", "x,y"]]
    for _ in range(2):  # at-least-once delivery: the same message twice
        store_batch.apply_async(
            args=(run.id, 1, batch_message(rows, rejects)), queue=celery_worker_process_queue()
        )
    wait_for_batches(run, 1)
    # Both deliveries are handled (each one is counted before it is skipped or stored).
    wait_until(lambda: IngestBatch.objects.get(run=run, number=1).attempts == 2, timeout=30)

    run.refresh_from_db()
    assert (run.status, run.rows_stored, run.rows_rejected) == ("completed", 1, 1)
    assert RejectedRow.objects.filter(run=run).count() == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "empty file"),
        ("id,first_name,last_name\n1,a,b\n", "missing required column(s): email_address"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00", "line 1"),
    ],
)
def test_unusable_input_exits_2_and_publishes_nothing(write_csv, tmp_path, content, message):
    path = str(tmp_path / "absent.csv") if content is None else write_csv(content)
    with pytest.raises(CommandError) as error:
        call_command("publish_csv", path)
    assert error.value.returncode == 2
    assert message in str(error.value)
    assert path in str(error.value)
    assert not IngestRun.objects.exists()


def test_failed_batches_can_be_requeued_from_their_kept_message(celery_worker_process):
    run = IngestRunFactory(file_name="dead-letter.csv", rows_published=2, batches_published=1)
    rows = [[2, "40", "Ann", "Lee", "ann@example.com", "1600000000000", "-1", "-1", "-1"]]
    rejects = [[3, "expected 8 fields, found 2", "x,y"]]
    # As a database outage would leave it: failed, with its message kept.
    IngestBatch.objects.create(
        run=run, number=1, status=IngestBatch.Status.FAILED, attempts=9, rows=2,
        error="database error", payload={"rows": rows, "rejects": rejects},
    )  # fmt: skip
    IngestRun.objects.filter(id=run.id).update(status=IngestRun.Status.FAILED, batches_failed=1)

    call_command("requeue_failed_batches", str(run.id), "--wait", "--timeout", "60")

    run.refresh_from_db()
    assert (run.status, run.rows_stored, run.rows_rejected, run.batches_failed) == (
        IngestRun.Status.COMPLETED, 1, 1, 0)  # fmt: skip
    batch = IngestBatch.objects.get(run=run)
    assert (batch.status, batch.payload, batch.error) == (IngestBatch.Status.STORED, None, "")
    assert User.objects.get(id=40).first_name == "Ann"


def test_requeue_of_an_unknown_run_exits_2():
    with pytest.raises(CommandError) as error:
        call_command("requeue_failed_batches", "999999")
    assert error.value.returncode == 2
