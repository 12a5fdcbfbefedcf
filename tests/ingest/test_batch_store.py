"""ingest.services.ingest_batch_store called directly, without a broker or a worker: what a
worker does with a batch, redeliveries included (the pipeline tests cover the same through
RabbitMQ and a real Celery worker)."""

from __future__ import annotations

import pytest

from ingest import services
from ingest.models import IngestBatch, RejectedRow
from ingest.services import batch_from_message, batch_message, ingest_batch_store
from tests.support.data import cached
from tests.support.factories import IngestRunFactory
from users.models import User
from users.validation import parse_row

pytestmark = pytest.mark.django_db


def row(line: int, user_id: int, first: str) -> list:
    return [line, str(user_id), first, "Lee", f"{first.lower()}@example.com", "1600000000000",
            "-1", "-1", "-1"]  # fmt: skip


@pytest.fixture
def run():
    return IngestRunFactory(file_name="direct.csv")


def test_a_batch_is_stored_with_its_rejects_and_counts(run, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        outcome = ingest_batch_store(
            run_id=run.id, batch=1,
            rows=[row(2, 61001, "Ann"), [3, "61002", "", "Lee", "x@x.com", "1", "-1", "-1", "-1"]],
            rejects=[[4, "expected 8 fields, found 2", "1,2"]],
        )  # fmt: skip
    assert (outcome.stored, outcome.rejected, outcome.written) == (1, 2, 1)
    assert User.objects.get(id=61001).first_name == "Ann"
    assert cached(61001)["first_name"] == "Ann"
    reasons = dict(RejectedRow.objects.filter(run=run).values_list("line", "reason"))
    assert reasons == {3: "first_name: must not be blank", 4: "expected 8 fields, found 2"}
    batch = IngestBatch.objects.get(run=run, number=1)
    assert (batch.status, batch.stored, batch.rejected) == (IngestBatch.Status.STORED, 1, 2)


def test_a_redelivered_batch_changes_nothing(run):
    ingest_batch_store(run_id=run.id, batch=1, rows=[row(2, 61011, "Ann")], rejects=[])
    User.objects.filter(id=61011).update(first_name="Edited meanwhile")
    again = ingest_batch_store(run_id=run.id, batch=1, rows=[row(2, 61011, "Ann")], rejects=[])
    assert again.skipped
    assert User.objects.get(id=61011).first_name == "Edited meanwhile"
    batch = IngestBatch.objects.get(run=run, number=1)
    assert (batch.status, batch.stored) == (IngestBatch.Status.STORED, 1)
    assert batch.attempts == 2  # every delivery is counted (for INGEST_MAX_ATTEMPTS)


def test_later_line_wins_whatever_order_batches_arrive_in(run):
    ingest_batch_store(run_id=run.id, batch=2, rows=[row(20, 61021, "Later")], rejects=[])
    outcome = ingest_batch_store(
        run_id=run.id, batch=1, rows=[row(5, 61021, "Earlier")], rejects=[]
    )
    assert outcome.written == 0  # the older line was skipped in PostgreSQL
    assert User.objects.get(id=61021).first_name == "Later"
    # ... and within one batch, the later of two lines.
    ingest_batch_store(
        run_id=run.id, batch=3, rows=[row(30, 61022, "First"), row(31, 61022, "Second")],
        rejects=[],
    )  # fmt: skip
    assert User.objects.get(id=61022).first_name == "Second"


def test_a_batch_started_too_often_is_failed_with_its_message_kept(run, settings):
    settings.INGEST_MAX_ATTEMPTS = 2
    IngestBatch.objects.create(run=run, number=1, rows=1, attempts=2)  # two deliveries died
    outcome = ingest_batch_store(run_id=run.id, batch=1, rows=[row(2, 61031, "Ann")], rejects=[])
    assert outcome.skipped
    batch = IngestBatch.objects.get(run=run, number=1)
    assert batch.status == IngestBatch.Status.FAILED
    assert "gave up after 2 attempts" in batch.error
    assert batch.payload  # kept, for requeue_failed_batches
    assert not User.objects.filter(id=61031).exists()


def test_a_batch_message_carries_rows_and_rejects_exactly():
    rows = [[2, "1", "Zoë", "Ödegaard", "z@x.com", "1600000000000", "-1", "", "-1"]]
    rejects = [[3, "expected 8 fields, found 2", 'x,"y\u2028']]
    assert batch_from_message(batch_message(rows, rejects)) == (rows, rejects)
    for not_a_batch in ('{"rows": []}', "[1]", "not json"):
        with pytest.raises((TypeError, ValueError)):
            batch_from_message(not_a_batch)


@pytest.fixture
def rules_with_a_gap(monkeypatch):
    """parse_row with a gap in its rules: a row whose first name is "nul" or "long-name"
    passes with a value PostgreSQL refuses (a NUL byte; a last name over the column's 255)."""
    gaps = {"nul": {"first_name": "a\x00b"}, "long-name": {"last_name": "a" * 300}}

    def parse_row_with_a_gap(fields):
        user = parse_row(fields)
        return user._replace(**gaps[fields[1]]) if fields[1] in gaps else user

    monkeypatch.setattr(services, "parse_row", parse_row_with_a_gap)


def test_rows_postgresql_refuses_are_rejected_alone_and_the_rest_stored(
    run, rules_with_a_gap, django_capture_on_commit_callbacks
):
    rows = [row(line, 62000 + line, f"Good{line}") for line in range(2, 42)]
    rows[5] = row(7, 62007, "nul")
    rows[30] = row(32, 62032, "long-name")
    rows.append(row(42, 62040, "long-name"))  # a later line of id 62040: that one is refused
    with django_capture_on_commit_callbacks(execute=True):
        outcome = ingest_batch_store(
            run_id=run.id, batch=1, rows=rows, rejects=[[50, "expected 8 fields, found 2", "1,2"]]
        )

    assert (outcome.stored, outcome.rejected, outcome.written) == (38, 4, 38)
    rejected = {r.line: r for r in RejectedRow.objects.filter(run=run)}
    assert sorted(rejected) == [7, 32, 42, 50]
    assert rejected[7].reason.startswith("refused by PostgreSQL: ")
    assert "0x00" in rejected[7].reason
    assert rejected[32].reason == (
        "refused by PostgreSQL: value too long for type character varying(255)"
    )
    assert rejected[32].raw.startswith("62032,long-name,Lee,")
    assert not User.objects.filter(id__in=[62007, 62032]).exists()
    # The earlier line of id 62040 stands, as when a later line fails validation.
    assert User.objects.get(id=62040).first_name == "Good40"
    assert User.objects.count() == 38
    assert cached(62002)["first_name"] == "Good2"
    batch = IngestBatch.objects.get(run=run, number=1)
    assert (batch.status, batch.stored, batch.rejected) == (IngestBatch.Status.STORED, 38, 4)
