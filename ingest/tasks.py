"""Celery tasks of the ingest pipeline: thin adapters over ingest.services and ingest.bulk."""

from __future__ import annotations

import logging
import threading
import traceback

from celery import shared_task, signals
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection

from ingest.bulk import ingest_indexes_restore
from ingest.services import (
    BatchUndecryptable,
    batch_from_message,
    ingest_batch_fail,
    ingest_batch_store,
    redact_addresses,
)

logger = logging.getLogger(__name__)

# Database hiccups are retried with backoff; past this the batch is recorded as failed.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
MAX_RETRIES = 8


@shared_task(name="ingest.store_batch", bind=True, acks_late=True, ignore_result=True)
def store_batch(self, run_id: int, batch: int, message: str) -> None:
    """Store one batch; `message`: its rows and rejects (ingest.services.batch_message)."""
    try:
        rows, rejects = batch_from_message(message)
    except BatchUndecryptable as error:  # kept encrypted, requeued once the key is in the ring
        logger.error("run %s batch %s: cannot decrypt its addresses (%s)", run_id, batch, error)
        ingest_batch_fail(
            run_id=run_id, batch=batch, error=f"cannot decrypt the batch's addresses: {error}",
            rows=[], rejects=[], payload=error.payload,
        )  # fmt: skip
        return
    except (TypeError, ValueError) as error:  # not a message this version writes
        logger.error("run %s batch %s: unreadable message (%s)", run_id, batch, error)
        ingest_batch_fail(
            run_id=run_id, batch=batch, error=f"unreadable batch message: {error}",
            rows=[], rejects=[],
        )  # fmt: skip
        return
    try:
        outcome = ingest_batch_store(run_id=run_id, batch=batch, rows=rows, rejects=rejects)
    except TRANSIENT_ERRORS as error:
        if self.request.retries < MAX_RETRIES:
            logger.warning(
                "run %s batch %s: %s; retrying", run_id, batch, redact_addresses(str(error))
            )
            raise self.retry(exc=error, countdown=min(2**self.request.retries, 60)) from error
        failure = f"database error: {error}"
    except Exception as error:  # a bug must not become an endless redelivery loop
        # The traceback, with any address its messages quote redacted: logs hold none.
        logger.error(
            "run %s batch %s: unexpected error\n%s",
            run_id, batch, redact_addresses("".join(traceback.format_exception(error))).rstrip(),
        )  # fmt: skip
        failure = f"{type(error).__name__}: {error}"
    else:
        logger.info(
            "run %s batch %s: %s stored (%s written), %s rejected",
            run_id,
            batch,
            outcome.stored,
            outcome.written,
            outcome.rejected,
        )
        return
    ingest_batch_fail(run_id=run_id, batch=batch, error=failure, rows=rows, rejects=rejects)


# Set when the worker shuts down: the index watch stops.
_stop_watching = threading.Event()


@signals.worker_ready.connect
def _restore_indexes_on_start(**_) -> None:
    """A worker start builds the users indexes a dead bulk import left out, then keeps
    watching for them every INGEST_INDEX_CHECK_INTERVAL seconds (a thread of the worker's
    main process: no beat, nothing on the queue)."""
    _restore_missing_indexes(wait=True)
    interval = settings.INGEST_INDEX_CHECK_INTERVAL
    if interval > 0:
        _stop_watching.clear()
        threading.Thread(
            target=_watch_indexes, args=(interval,), name="index-watch", daemon=True
        ).start()


@signals.worker_shutdown.connect
def _stop_index_watch(**_) -> None:
    _stop_watching.set()


def _watch_indexes(interval: float) -> None:
    while not _stop_watching.wait(interval):
        # Without waiting: a process holding the lock is dropping or building them already.
        _restore_missing_indexes(wait=False)


def _restore_missing_indexes(*, wait: bool) -> None:
    try:
        built = ingest_indexes_restore(wait=wait)
    except DatabaseError:
        logger.exception("could not check the users indexes")
    else:
        if built:
            logger.warning("built the users indexes left out by a bulk import: %s", built)
    finally:
        connection.close()  # this thread's own: none is held between two checks
