"""Reads of the ingest records: totals over runs and batches, the broker's queue depth, and a
run's progress for the pages that show it (landing page, admin)."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Greatest

from ingest.models import IngestBatch, IngestRun

logger = logging.getLogger(__name__)


class IngestTotals(NamedTuple):
    published: int  # rows publish_csv put on the queue
    stored: int
    rejected: int
    retries: int  # extra deliveries of batches (retries after errors, redeliveries)
    failed_batches: int  # dead letters
    runs_by_status: dict[str, int]


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


def ingest_totals() -> IngestTotals:
    """Sums over every recorded run and batch (exact under redelivery: counts live per batch)."""
    runs = IngestRun.objects.aggregate(published=Sum("rows_published", default=0))
    by_status = dict(IngestRun.objects.values_list("status").annotate(n=Count("id")).order_by())
    batches = IngestBatch.objects.aggregate(
        stored=Sum("stored", default=0),
        rejected=Sum("rejected", default=0),
        retries=Sum(Greatest(F("attempts") - 1, 0), default=0),
        failed=Count("id", filter=Q(status=IngestBatch.Status.FAILED)),
    )
    return IngestTotals(
        published=runs["published"],
        stored=batches["stored"],
        rejected=batches["rejected"],
        retries=batches["retries"],
        failed_batches=batches["failed"],
        runs_by_status={status: by_status.get(status, 0) for status in IngestRun.Status.values},
    )


def ingest_queue_depth(timeout: float = 1.0) -> int | None:
    """Ready messages on the ingest queue (passive declare), None if the broker is away."""
    from kombu import Connection
    from kombu.exceptions import ChannelError

    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
            channel = connection.channel()
            try:
                return channel.queue_declare(settings.INGEST_QUEUE, passive=True).message_count
            except ChannelError:
                return 0  # not declared yet (AMQP) or empty (Redis lists vanish when empty)
    except Exception as error:
        logger.warning("metrics: cannot read the ingest queue depth: %s", error)
        return None


# Rejected rows listed with a run's progress; the admin lists them all.
PROGRESS_REJECTS = 100


def ingest_run_latest() -> IngestRun | None:
    """The most recent ingest run, if any."""
    return IngestRun.objects.order_by("-id").first()


def ingest_run_progress(*, run_id: int) -> dict[str, Any] | None:
    """Where a run stands: rows published so far, stored and rejected by the workers so far,
    and its first rejected rows (line and reason)."""
    run = IngestRun.objects.filter(id=run_id).first()
    if run is None:
        return None
    totals = ingest_run_totals(run_id=run_id)
    rejects = run.rejected_rows.order_by("line").values_list("line", "reason")[:PROGRESS_REJECTS]
    return {
        "run": run.id,
        "status": run.status,
        "finished": run.status in (IngestRun.Status.COMPLETED, IngestRun.Status.FAILED),
        "published": run.rows_published,
        "batches_published": run.batches_published,
        "batches_done": totals["done"],
        "stored": totals["stored"],
        "rejected": totals["rejected"],
        "batches_failed": totals["failed"],
        "error": run.error,
        "rejects": [{"line": line, "reason": reason} for line, reason in rejects],
    }
