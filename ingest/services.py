"""Storing ingest batches and keeping the record of runs, batches and rejected rows.

The worker side of the pipeline: `ingest_batch_store` validates one batch, upserts its users
through users.services and records the outcome, all in one transaction. Counts live on
IngestBatch (one row per batch, rewritten on redelivery), so they stay exact under
at-least-once delivery and concurrent workers never contend for the run's row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from ingest.models import IngestBatch, IngestRun, RejectedRow
from ingest.parsing import RowRejected, parse_row, to_csv_line
from users.services import SourcedUser, cache_repair_stale, users_upsert

logger = logging.getLogger(__name__)

# Message rows: [line, id, first_name, last_name, email_address, created_at, deleted_at,
# merged_at, parent_user_id]; rejects found by the producer: [line, reason, raw].
BatchRow = list[Any]
BatchReject = list[Any]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    stored: int
    rejected: int
    written: int  # rows that changed PostgreSQL (older duplicates are skipped)
    skipped: bool = False  # already stored, or given up on


def ingest_run_start(
    *, file_name: str, file_size: int, checksum: str, batch_size: int
) -> IngestRun:
    """Record the start of a publish_csv run."""
    return IngestRun.objects.create(
        file_name=file_name, file_size=file_size, checksum=checksum, batch_size=batch_size
    )


def ingest_run_published(*, run: IngestRun, rows: int, batches: int) -> None:
    """Mark every batch of the run as queued; the run completes when workers have them all."""
    run.rows_published = rows
    run.batches_published = batches
    run.status = IngestRun.Status.PUBLISHED
    run.published_at = timezone.now()
    run.save(update_fields=["rows_published", "batches_published", "status", "published_at"])
    ingest_run_refresh(run_id=run.id)


def ingest_run_publishing(*, run_id: int, rows: int, batches: int) -> None:
    """Record how far publishing has got, for pages that show a run's progress."""
    IngestRun.objects.filter(id=run_id, status=IngestRun.Status.PUBLISHING).update(
        rows_published=rows, batches_published=batches
    )


def ingest_run_fail(*, run: IngestRun, error: str) -> None:
    """Stop a run that could not be published completely."""
    IngestRun.objects.filter(id=run.id).update(
        status=IngestRun.Status.FAILED, error=error, finished_at=timezone.now()
    )


def ingest_run_totals(*, run_id: int) -> dict[str, int]:
    """Counts over the batches workers have finished so far."""
    totals = IngestBatch.objects.filter(run_id=run_id).aggregate(
        done=Count("id", filter=~Q(status=IngestBatch.Status.STARTED)),
        failed=Count("id", filter=Q(status=IngestBatch.Status.FAILED)),
        failed_rows=Sum("rows", filter=Q(status=IngestBatch.Status.FAILED), default=0),
        stored=Sum("stored", default=0),
        rejected=Sum("rejected", default=0),
    )
    return totals


def ingest_run_refresh(*, run_id: int) -> None:
    """Close the run once every published batch is stored or failed."""
    totals = ingest_run_totals(run_id=run_id)
    closed = IngestRun.objects.filter(
        id=run_id, status=IngestRun.Status.PUBLISHED, batches_published=totals["done"]
    ).update(
        status=IngestRun.Status.FAILED if totals["failed"] else IngestRun.Status.COMPLETED,
        rows_stored=totals["stored"],
        rows_rejected=totals["rejected"],
        batches_failed=totals["failed"],
        error=f"{totals['failed']} batch(es) failed" if totals["failed"] else "",
        finished_at=timezone.now(),
    )
    if closed:
        logger.info(
            "ingest run %s finished: %s stored, %s rejected, %s failed batch(es)",
            run_id,
            totals["stored"],
            totals["rejected"],
            totals["failed"],
        )


_BEGIN_ATTEMPT_SQL = """
INSERT INTO ingest_ingestbatch (run_id, number, status, attempts, rows, stored, rejected, error,
                                updated_at)
VALUES (%s, %s, 'started', 1, %s, 0, 0, '', now())
ON CONFLICT (run_id, number) DO UPDATE
    SET attempts = ingest_ingestbatch.attempts + 1, updated_at = now()
RETURNING attempts, status
"""


def _begin_attempt(*, run_id: int, batch: int, rows: int) -> tuple[int, str]:
    with connection.cursor() as cursor:
        cursor.execute(_BEGIN_ATTEMPT_SQL, [run_id, batch, rows])
        return cursor.fetchone()


def ingest_batch_store(
    *, run_id: int, batch: int, rows: list[BatchRow], rejects: list[BatchReject]
) -> BatchOutcome:
    """Validate a batch, upsert its users and record its rejects in one transaction."""
    cache_repair_stale()  # entries left stale by an earlier Redis outage, if it is over
    attempts, status = _begin_attempt(run_id=run_id, batch=batch, rows=len(rows) + len(rejects))
    if status != IngestBatch.Status.STARTED:
        logger.info("run %s batch %s already %s; skipping redelivery", run_id, batch, status)
        return BatchOutcome(0, 0, 0, skipped=True)
    if attempts > settings.INGEST_MAX_ATTEMPTS:
        ingest_batch_fail(
            run_id=run_id,
            batch=batch,
            rows=rows,
            rejects=rejects,
            error=f"gave up after {attempts - 1} attempts (the worker died or kept failing)",
        )
        return BatchOutcome(0, 0, 0, skipped=True)

    valid: list[SourcedUser] = []
    rejected = [
        RejectedRow(run_id=run_id, line=line, reason=reason, raw=raw)
        for line, reason, raw in rejects
    ]
    for line, *fields in rows:
        try:
            valid.append(SourcedUser(line=line, user=parse_row(fields)))
        except RowRejected as error:
            rejected.append(
                RejectedRow(run_id=run_id, line=line, reason=error.reason, raw=to_csv_line(fields))
            )

    with transaction.atomic():
        written = users_upsert(run_id=run_id, batch=batch, rows=valid)
        # ignore_conflicts: a redelivered batch may have recorded these lines already.
        RejectedRow.objects.bulk_create(rejected, ignore_conflicts=True)
        IngestBatch.objects.filter(run_id=run_id, number=batch).update(
            status=IngestBatch.Status.STORED,
            stored=len(valid),
            rejected=len(rejected),
            error="",
            payload=None,  # a re-queued dead letter is done with its message
            updated_at=timezone.now(),
        )
    ingest_run_refresh(run_id=run_id)
    return BatchOutcome(stored=len(valid), rejected=len(rejected), written=written)


def ingest_batches_reopen(*, run_id: int) -> list[IngestBatch]:
    """Reset a run's failed batches that kept their message, for publishing them again."""
    with transaction.atomic():
        batches = list(
            IngestBatch.objects.select_for_update()
            .filter(run_id=run_id, status=IngestBatch.Status.FAILED)
            .exclude(payload=None)
        )
        if batches:
            IngestBatch.objects.filter(id__in=[b.id for b in batches]).update(
                status=IngestBatch.Status.STARTED, attempts=0, error=""
            )
            IngestRun.objects.filter(id=run_id).update(
                status=IngestRun.Status.PUBLISHED, finished_at=None, error=""
            )
    return batches


def ingest_batch_fail(
    *, run_id: int, batch: int, error: str, rows: list[BatchRow], rejects: list[BatchReject]
) -> None:
    """Record a batch that will not be stored (dead letter), keeping its message."""
    logger.error("run %s batch %s failed: %s", run_id, batch, error)
    IngestBatch.objects.update_or_create(
        run_id=run_id,
        number=batch,
        defaults={
            "status": IngestBatch.Status.FAILED,
            "error": error[:2000],
            "payload": {"rows": rows, "rejects": rejects},
        },
    )
    ingest_run_refresh(run_id=run_id)
