"""The producer side of the pipeline: stream a CSV file onto the queue in batches.

Memory stays flat: one batch is held at a time. Messages are persistent and, on AMQP,
publisher-confirmed; a broker that drops out is retried, and one that stays away fails the
run clearly (re-running the file is idempotent, so the re-run completes the job).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from celery import current_app
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from kombu.exceptions import OperationalError as BrokerError

from ingest.models import IngestRun
from ingest.parsing import (
    COLUMNS,
    CsvFileError,
    DataLineCounter,
    Record,
    read_records,
    redact_addresses,
    redacted_reason,
)
from ingest.selectors import ingest_run_totals
from ingest.services import (
    BatchReject,
    BatchRow,
    batch_message,
    batch_payload_message,
    ingest_batches_reopen,
    ingest_run_fail,
    ingest_run_published,
    ingest_run_publishing,
    ingest_run_start,
)
from ingest.tasks import store_batch
from users.services import cache_repair_stale

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds between two progress records on the run while publishing (the admin shows them).
PROGRESS_RECORD_INTERVAL = 1.0
# Seconds between two reads of the stored totals while waiting (the progress bar).
PROGRESS_POLL_INTERVAL = 0.5
# What a batch's message may carry besides its rows and rejects (Celery's envelope and headers).
ENVELOPE_BYTES = 64 << 10
# Bytes a character of a row or reject can take in the message: JSON-escaped once in the batch
# text (a control character is "\u0001", six bytes; a non-ASCII one up to four) and once more
# as a string in the task's arguments ("\\u0001", seven).
MAX_BYTES_PER_CHAR = 7
# ... and the rest of a row or reject in the message: its line number, quotes and commas, both
# times escaped (and a row's address in the batch's token: its quotes and comma).
RECORD_OVERHEAD_BYTES = 80
# A row's email address travels in the batch's token (ingest.services.batch_message): escaped
# once, then base64 (4 bytes for 3), so eight bytes a character at most, one more than
# MAX_BYTES_PER_CHAR counts.
EMAIL_FIELD = COLUMNS.index("email_address")


def publish_retry_policy() -> dict:
    """Reconnect and re-publish with backoff (about a minute by default) before giving up."""
    return {
        "max_retries": settings.INGEST_PUBLISH_RETRIES,
        "interval_start": 0.2,
        "interval_step": 0.5,
        "interval_max": 5,
    }


class PublishError(Exception):
    """Publishing stopped part-way (the broker unavailable or refusing a message, or any other
    error once the run was recorded); the run is marked failed, its message says why."""


class PublishInterrupted(PublishError):
    """Publishing was interrupted (Ctrl-C, SIGTERM); the run is marked failed."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    run: IngestRun
    rows: int  # data rows read from the file (blank lines excluded)
    batches: int
    rejected_early: int  # rows the producer already knew were bad (structure, encoding)


class DependencyUnavailable(Exception):
    """PostgreSQL stayed unreachable for longer than INGEST_WAIT_DEPENDENCY_PATIENCE."""


_DATABASE_ERRORS = (OperationalError, InterfaceError)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def with_database_patience(action: Callable[[], T], *, what: str = "PostgreSQL") -> T:
    """`action()`, run again on a fresh connection while PostgreSQL is unreachable (a restart
    terminates every connection), for up to INGEST_WAIT_DEPENDENCY_PATIENCE seconds; then
    DependencyUnavailable. Only for reads and idempotent writes: an action may run twice."""
    patience = settings.INGEST_WAIT_DEPENDENCY_PATIENCE
    give_up_at = None
    delay = 0.2
    while True:
        try:
            return action()
        except _DATABASE_ERRORS as error:
            if give_up_at is None:
                give_up_at = time.monotonic() + patience
                logger.warning(
                    "%s unreachable (%s); reconnecting for up to %.0fs",
                    what,
                    _one_line(error),
                    patience,
                )
            elif time.monotonic() >= give_up_at:
                raise DependencyUnavailable(
                    f"{what} unreachable for {patience:.0f}s ({_one_line(error)})"
                ) from None
        try:
            connection.close()  # the broken connection goes; the next query opens a new one
        except _DATABASE_ERRORS:
            pass
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def file_checksum(path: str) -> tuple[str, int]:
    """The file's SHA-256 and its number of lines (read in the same pass)."""
    digest, lines = hashlib.sha256(), 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    return digest.hexdigest(), lines


def count_data_lines(path: str) -> int:
    """The file's data rows as read_records sees them (blank lines and the header excepted)."""
    counter = DataLineCounter()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            counter.feed(chunk)
    return counter.data_lines


def check_readable(path: str) -> int:
    """Return the file's size, or raise CsvFileError saying why it cannot be read."""
    if not os.path.exists(path):
        raise CsvFileError("no such file")
    if os.path.isdir(path):
        raise CsvFileError("is a directory, not a CSV file")
    if not os.access(path, os.R_OK):
        raise CsvFileError("permission denied")
    return os.path.getsize(path)


def publish_file(
    *,
    path: str,
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    file_name: str | None = None,
    on_start: Callable[[IngestRun], None] | None = None,
) -> PublishResult:
    """Publish every row of the file as batches of `batch_size`; return the run.

    `should_stop` is asked before the run starts and after each batch: when it says yes, the
    run is recorded as interrupted and PublishInterrupted raised (batches sent stay queued).
    `file_name` is what the run records (default: the file's absolute path; an upload's own
    name for the admin import); `on_start` is called with the run once it is recorded.
    """
    size = check_readable(path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as error:
        raise CsvFileError(error.strerror or str(error)) from None
    try:
        records = read_records(stream)  # reads the header: a bad file stops here
        checksum, lines = file_checksum(path)
        if should_stop():
            raise PublishInterrupted("interrupted; nothing was published")
        run = with_database_patience(
            lambda: ingest_run_start(
                file_name=file_name or os.path.abspath(path),
                file_size=size,
                checksum=checksum,
                batch_size=batch_size,
                # The lines are an upper bound of the data rows that decide a bulk load (a
                # file padded with blank lines must not): counted, in a second pass over the
                # file, only when the bound would make one.
                rows=lines,
                count_rows=partial(count_data_lines, path),
            )
        )
        logger.info("ingest run %s: publishing %s (%d bytes)", run.id, path, size)
        publisher = _BatchPublisher(
            run=run, batch_size=batch_size, on_progress=on_progress, should_stop=should_stop
        )
        # From here on the run exists (a bulk run has dropped the indexes): whatever stops
        # publishing fails the run, which brings the indexes back, and says why in one line.
        try:
            if on_start:
                on_start(run)
            publisher.publish(records)
            count, batches = publisher.count, publisher.batches
            with_database_patience(
                lambda: ingest_run_published(run=run, rows=count, batches=batches)
            )
        except (_Stopped, KeyboardInterrupt):
            message = (
                f"interrupted while publishing (up to line {publisher.last_line}); the batches "
                "published so far stay queued; run the command again to finish (ingest is "
                "idempotent)."
            )
            _fail_run(run, message)
            raise PublishInterrupted(message) from None
        except PublishError:
            raise  # the run is failed already
        except Exception as error:
            message = (
                f"publishing failed at batch {publisher.batches + 1} (up to line "
                f"{publisher.last_line}): {_one_line(error)}. Earlier batches are queued; "
                "run the command again to finish (ingest is idempotent)."
            )
            logger.debug("ingest run %s: publishing failed", run.id, exc_info=True)
            _fail_run(run, message)
            raise PublishError(message) from error
    finally:
        stream.close()
    logger.info("ingest run %s: published %d rows in %d batches", run.id, count, batches)
    return PublishResult(
        run=run, rows=count, batches=batches, rejected_early=publisher.rejected_early
    )


def _fail_run(run: IngestRun, message: str) -> None:
    """Fail the run (its indexes come back), with patience for PostgreSQL; if it stays away,
    a worker restores the indexes once the run has been idle for INGEST_BULK_IDLE_TIMEOUT."""
    try:
        with_database_patience(lambda: ingest_run_fail(run=run, error=message))
    except DependencyUnavailable as error:
        logger.error("ingest run %s: could not record its failure: %s", run.id, error)


def batch_max_bytes() -> int:
    """What a batch's rows and rejects may take in their message (INGEST_BATCH_MAX_BYTES less
    the envelope), however their characters encode."""
    return max(settings.INGEST_BATCH_MAX_BYTES - ENVELOPE_BYTES, 1)


class _Stopped(Exception):
    """should_stop() said yes between two batches."""


def _reconnect(producer) -> None:
    """Give the producer a new connection after the broker closed its own, through the next
    node of CELERY_BROKER_URL when the current one is gone (kombu's failover)."""
    connection = producer.connection
    connection.collect()  # closed by the broker: forget it without talking to it
    connection.ensure_connection(**publish_retry_policy())
    producer.revive(connection.default_channel)


class _BatchPublisher:
    """Collects records into batches and publishes each as one store_batch task."""

    def __init__(
        self,
        *,
        run: IngestRun,
        batch_size: int,
        on_progress: Callable[[int], None] | None,
        should_stop: Callable[[], bool],
    ) -> None:
        self.run, self.batch_size, self.on_progress = run, batch_size, on_progress
        self.should_stop = should_stop
        self.rows: list[BatchRow] = []
        self.rejects: list[BatchReject] = []
        self.bytes = 0  # at most what self.rows and self.rejects take in the message
        self.max_bytes = batch_max_bytes()
        self.count = self.batches = self.rejected_early = 0
        self.last_line = 1
        self.recorded_at = time.monotonic()

    def publish(self, records: Iterable[Record]) -> None:
        with current_app.producer_or_acquire() as producer:
            for record in records:
                # At most what the record takes in the message: a row's line characters (its
                # fields and the commas between them), or a reject's reason and raw text.
                fields = record.fields
                if fields is None:  # its addresses never reach the broker (ingest.parsing)
                    reason, raw = redacted_reason(record.reason), redact_addresses(record.raw)
                if fields is None:
                    size = (len(reason) + len(raw)) * MAX_BYTES_PER_CHAR + RECORD_OVERHEAD_BYTES
                else:  # its address, in the batch's token, takes one more byte a character
                    size = (
                        record.size * MAX_BYTES_PER_CHAR
                        + len(fields[EMAIL_FIELD])
                        + RECORD_OVERHEAD_BYTES
                    )
                # Cut before a record that would take the message over its bound (a record
                # alone is at most a 1 MiB line: MAX_LINE_BYTES).
                if self.bytes + size > self.max_bytes and (self.rows or self.rejects):
                    self._flush(producer)
                self.count += 1
                self.last_line = record.line
                self.bytes += size
                if fields is None:
                    self.rejects.append([record.line, reason, raw])
                    self.rejected_early += 1
                else:
                    self.rows.append([record.line, *fields])
                if len(self.rows) + len(self.rejects) >= self.batch_size:
                    self._flush(producer)
            if self.rows or self.rejects:
                self._flush(producer)

    def _send(self, producer, number: int) -> None:
        """Publish one batch (with confirms). kombu retries what it takes for recoverable (a
        lost socket, a refused connection); a node that goes down can also close the
        connection with a hard error (541 INTERNAL_ERROR, seen stopping a cluster node), which
        kombu passes through: reconnect, through the next node, and publish again. A batch
        published twice is stored once (ingest is idempotent)."""
        for attempt in range(settings.INGEST_PUBLISH_RETRIES + 1):
            try:
                store_batch.apply_async(
                    args=(self.run.id, number, batch_message(self.rows, self.rejects)),
                    queue=settings.INGEST_QUEUE,
                    producer=producer,
                    retry=True,
                    retry_policy=publish_retry_policy(),
                    # Celery would otherwise repr() every row into the message headers.
                    argsrepr=f"(run={self.run.id}, batch={number}, rows={len(self.rows)})",
                )
                return
            except BrokerError:
                raise
            except producer.connection.connection_errors as error:
                if attempt == settings.INGEST_PUBLISH_RETRIES:
                    raise BrokerError(str(error)) from error
                logger.warning(
                    "ingest run %s: broker closed the connection publishing batch %s (%s); "
                    "reconnecting",
                    self.run.id, number, error,
                )  # fmt: skip
                _reconnect(producer)

    def _flush(self, producer) -> None:
        run, number = self.run, self.batches + 1
        try:
            self._send(producer, number)
        except BrokerError as error:
            message = (
                f"broker unavailable while publishing batch {number} (up to line "
                f"{self.last_line}): {error}. Earlier batches are queued; run the command "
                "again to finish (ingest is idempotent)."
            )
            _fail_run(run, message)
            raise PublishError(message) from error
        self.batches = number
        self.rows, self.rejects, self.bytes = [], [], 0
        if time.monotonic() - self.recorded_at >= PROGRESS_RECORD_INTERVAL:
            ingest_run_publishing(run_id=run.id, rows=self.count, batches=number)
            self.recorded_at = time.monotonic()
        if self.on_progress:
            self.on_progress(self.count)
        if self.should_stop():
            raise _Stopped


def requeue_failed_batches(*, run_id: int) -> int:
    """Publish a run's failed batches again from their kept messages; return how many."""
    batches = ingest_batches_reopen(run_id=run_id)
    with current_app.producer_or_acquire() as producer:
        for batch in batches:
            store_batch.apply_async(
                args=(
                    run_id,
                    batch.number,
                    batch_payload_message(batch.payload),
                ),
                queue=settings.INGEST_QUEUE,
                producer=producer,
                retry=True,
                retry_policy=publish_retry_policy(),
                argsrepr=f"(run={run_id}, batch={batch.number}, requeued)",
            )
    if batches:
        logger.info("ingest run %s: re-queued %d failed batch(es)", run_id, len(batches))
    return len(batches)


def wait_for_run(
    *,
    run_id: int,
    timeout: float,
    on_progress: Callable[[int], None] | None = None,
    poll_interval: float = 0.1,
) -> IngestRun:
    """Block until workers have finished every batch of the run (or the timeout passes).

    PostgreSQL going away meanwhile (a restart) is waited out with bounded patience
    (with_database_patience): the workers go on storing, and so does the waiting."""
    deadline = time.monotonic() + timeout
    finished = (IngestRun.Status.COMPLETED, IngestRun.Status.FAILED)

    def poll(with_totals: bool) -> tuple[IngestRun, dict[str, int] | None]:
        run = IngestRun.objects.get(id=run_id)
        totals = ingest_run_totals(run_id=run_id) if with_totals else None
        return run, totals

    # The status is read often (the command returns soon after the run completes), the
    # progress totals, an aggregate over the batches, only every PROGRESS_POLL_INTERVAL.
    totals_due = 0.0
    while True:
        with_totals = on_progress is not None and time.monotonic() >= totals_due
        run, totals = with_database_patience(partial(poll, with_totals))
        if run.status in finished:
            return run
        if on_progress and totals:
            on_progress(totals["stored"] + totals["rejected"])
            totals_due = time.monotonic() + PROGRESS_POLL_INTERVAL
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"run {run_id} not finished after {timeout:.0f}s: are workers running "
                f"on queue {settings.INGEST_QUEUE!r}?"
            )
        time.sleep(poll_interval)


def repair_cache_after_run(*, retry_interval: float = 1.0) -> int:
    """Delete the Redis entries noted stale while Redis was away (users.services); while Redis
    is still unreachable, try again for up to INGEST_WAIT_DEPENDENCY_PATIENCE seconds. Return
    how many entries are left (0 once Redis answered)."""
    give_up_at = time.monotonic() + settings.INGEST_WAIT_DEPENDENCY_PATIENCE
    warned = False
    while True:
        _, left = with_database_patience(cache_repair_stale)
        if not left or time.monotonic() >= give_up_at:
            return left
        if not warned:
            logger.warning("Redis unreachable: %d users to repair in the cache; retrying", left)
            warned = True
        time.sleep(retry_interval)
