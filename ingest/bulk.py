"""Bulk runs: the state machine of a big import into an empty or small users table, which loads
with the primary key only (ingest.indexes drops and builds the rest).

- deciding: `bulk_run_deciding`, when a run is recorded (ingest.services.ingest_run_start): a
  file of at least INGEST_BULK_MIN_ROWS rows into a table holding at most
  INGEST_BULK_TABLE_RATIO times as many users drops the indexes, under the index lock, before
  the run that needs them dropped is recorded; any other run first builds what a crashed bulk
  run left out;
- loading: `ingest_bulk_run_loading`, the bulk run still publishing or storing (with progress
  within INGEST_BULK_IDLE_TIMEOUT, else it is taken for dead), or building its indexes;
- indexing: after the run's last batch (ingest.services.ingest_run_refresh) the run is
  `indexing` and `bulk_runs_finish` builds the indexes, then completes it (or fails it when a
  build fails);
- restoring: `ingest_indexes_restore`, from worker start, each worker's periodic check, a
  failed run and `migrate`: builds what is missing unless a bulk run is still loading, and
  closes the runs that waited for the indexes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from ingest.indexes import index_lock, users_indexes_build, users_indexes_drop, users_indexes_status
from ingest.models import IngestRun

logger = logging.getLogger(__name__)


@contextmanager
def bulk_run_deciding(*, rows: int, count_rows: Callable[[], int] | None = None) -> Iterator[bool]:
    """Whether a new run is a bulk run (its indexes are dropped by then), held under the index
    lock while the caller records the run. `rows`: the file's data rows; `count_rows`: when
    `rows` is only an upper bound (the file's lines), what counts them exactly, called only if
    the bound would make a bulk run."""
    with index_lock():
        bulk = (
            _wants_bulk_load(rows=rows)
            and (count_rows is None or _wants_bulk_load(rows=count_rows()))
            and users_indexes_drop()
        )
        if not bulk and not _bulk_runs_loading():
            users_indexes_build()  # what a crashed bulk run left out, if anything
        yield bulk


def _wants_bulk_load(*, rows: int) -> bool:
    if rows < settings.INGEST_BULK_MIN_ROWS:
        return False
    most = int(rows * settings.INGEST_BULK_TABLE_RATIO)
    with connection.cursor() as cursor:  # counts at most `most + 1` rows of the primary key
        cursor.execute("SELECT count(*) FROM (SELECT 1 FROM users_user LIMIT %s) t", [most + 1])
        return cursor.fetchone()[0] <= most


def ingest_bulk_run_loading() -> int | None:
    """The bulk run still loading (it wants the indexes left out), if any: publishing or
    storing with progress within INGEST_BULK_IDLE_TIMEOUT (else it is taken for dead), or
    building its indexes."""
    since = timezone.now() - timedelta(seconds=settings.INGEST_BULK_IDLE_TIMEOUT)
    loading = Q(status=IngestRun.Status.INDEXING) | Q(
        Q(started_at__gte=since) | Q(batches__updated_at__gte=since),
        status__in=[IngestRun.Status.PUBLISHING, IngestRun.Status.PUBLISHED],
    )
    return IngestRun.objects.filter(loading, bulk=True).values_list("id", flat=True).first()


def _bulk_runs_loading() -> bool:
    """Whether a bulk run is still storing rows (one building its indexes wants them back)."""
    run_id = ingest_bulk_run_loading()
    return run_id is not None and not _runs_indexing()


def ingest_indexes_restore(*, force: bool = False, wait: bool = True) -> list[str]:
    """Build the users indexes that are missing, unless a bulk run is still loading (`force`:
    even then); then close the bulk runs that waited for them. Return the names built.
    `wait` off: do nothing while another process holds the index lock (it is dropping or
    building them)."""
    if users_indexes_status().complete and not _runs_indexing():
        return []
    with index_lock(wait=wait) as locked:
        if not locked:
            return []
        built = [] if (_bulk_runs_loading() and not force) else users_indexes_build()
        _close_indexed_runs()
    return built


def _runs_indexing() -> bool:
    return IngestRun.objects.filter(status=IngestRun.Status.INDEXING).exists()


def bulk_runs_finish() -> None:
    """Build the indexes bulk runs left out and complete the runs waiting for them. A build
    that fails (not a crash: that is picked up again by the batch's redelivery or the next
    worker start) fails the runs, and the next run, worker start or `migrate` builds them."""
    with index_lock():
        try:
            users_indexes_build()
        except DatabaseError as error:
            logger.exception("indexes: building failed")
            IngestRun.objects.filter(status=IngestRun.Status.INDEXING).update(
                status=IngestRun.Status.FAILED,
                error=f"rows stored, but building the users indexes failed: {error}"[:2000],
                finished_at=timezone.now(),
            )
            return
        _close_indexed_runs()


def _close_indexed_runs() -> None:
    for run in IngestRun.objects.filter(status=IngestRun.Status.INDEXING):
        IngestRun.objects.filter(id=run.id, status=IngestRun.Status.INDEXING).update(
            status=IngestRun.Status.FAILED if run.batches_failed else IngestRun.Status.COMPLETED,
            finished_at=timezone.now(),
        )
        log_run_finished(run)


def log_run_finished(run: IngestRun) -> None:
    """Log a run's outcome once it is closed (completed or failed)."""
    logger.info(
        "ingest run %s finished: %s stored, %s rejected, %s failed batch(es)",
        run.id,
        run.rows_stored,
        run.rows_rejected,
        run.batches_failed,
    )
