"""Storing ingest batches and keeping the record of runs, batches and rejected rows.

The worker side of the pipeline: `ingest_batch_store` validates one batch (users.rows), upserts
its users through users.services and records the outcome, all in one transaction. Whether a
run loads as a bulk run, and its indexes around it, is ingest.bulk's. Counts live on
IngestBatch (one row per batch, rewritten on redelivery), so they stay exact under
at-least-once delivery and concurrent workers never contend for the run's row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
import psycopg
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import Case, DateTimeField, Value, When
from django.utils import timezone

from ingest.bulk import (
    bulk_run_deciding,
    bulk_runs_finish,
    ingest_indexes_restore,
    log_run_finished,
)
from ingest.models import IngestBatch, IngestRun, RejectedRow
from ingest.parsing import COLUMNS, redact_addresses, redacted_line, redacted_reason
from ingest.selectors import ingest_run_totals
from users.crypto import INGEST_BATCH_CONTEXT, DecryptionError, decrypt, encrypt, token_key_id
from users.services import (
    SourcedUser,
    cache_repair_stale,
    stream_redactions_apply,
    users_upsert,
)
from users.validation import RowRejected, parse_row

logger = logging.getLogger(__name__)

# Message rows: [line, *the values of ingest.parsing.COLUMNS]; rejects found by the producer:
# [line, reason, raw] (its addresses redacted, ingest.parsing).
BatchRow = list[Any]
BatchReject = list[Any]
# Where a message row holds its email address.
_EMAIL_AT = 1 + COLUMNS.index("email_address")


class BatchUndecryptable(ValueError):
    """A batch whose addresses this process's keyring cannot decrypt; `payload`: the batch as it
    came, still encrypted, for the dead letter (requeued once the key is in the ring)."""

    def __init__(self, message: str, payload: dict) -> None:
        super().__init__(message)
        self.payload = payload


def _sealed(rows: list[BatchRow]) -> tuple[list[BatchRow], str | None]:
    """The rows with their email addresses taken out (None in their place), and the addresses in
    one token (users.crypto, AES-256-GCM): a message or a dead letter then holds no plaintext
    address. None for a batch without any (its rows are returned as they are)."""
    emails: list[Any] = []
    sealed: list[BatchRow] = []
    keep, take = emails.append, sealed.append
    for row in rows:
        if isinstance(row, list) and len(row) > _EMAIL_AT:
            row = row.copy()
            keep(row[_EMAIL_AT])
            row[_EMAIL_AT] = None
        else:  # not a row (a bug-shaped message): carried as it is, refused by the worker
            keep(None)
        take(row)
    if not any(emails):
        return rows, None
    return sealed, encrypt(orjson.dumps(emails), context=INGEST_BATCH_CONTEXT)


def _unsealed(rows: list[BatchRow], emails: str) -> list[BatchRow]:
    """The rows with their addresses put back from `_sealed`'s token (in place)."""
    if not isinstance(emails, str):
        raise TypeError("a batch message's addresses are one token")
    addresses = orjson.loads(decrypt(emails, context=INGEST_BATCH_CONTEXT))
    if len(addresses) != len(rows):
        raise ValueError("a batch message's addresses do not match its rows")
    for row, address in zip(rows, addresses, strict=True):
        if address is not None:
            row[_EMAIL_AT] = address
    return rows


def batch_payload(rows: list[BatchRow], rejects: list[BatchReject]) -> dict:
    """A batch as a failed batch keeps it (IngestBatch.payload): its addresses encrypted."""
    sealed, emails = _sealed(rows)
    return {"rows": sealed, "rejects": rejects} | ({"emails": emails} if emails else {})


def batch_message(rows: list[BatchRow], rejects: list[BatchReject]) -> str:
    """A batch's rows and rejects as one JSON text: the form the store_batch task carries them in.

    Celery's prefork worker decodes each message in its main process and pickles the decoded
    arguments to the child that runs the task, which decodes the message again: as lists, a
    5,000-row batch was built three times over (45,000 strings each), and the main process
    took 28% of the worker's CPU (bench_ingest). As one string it is copied, not rebuilt,
    until the task reads it, once (batch_from_message).

    The rows' email addresses travel encrypted, all of a batch's in one token (`_sealed`), so
    no plaintext address reaches the broker's message store (docs/security.md)."""
    return batch_payload_message(batch_payload(rows, rejects))


def batch_payload_message(payload: dict) -> str:
    """The message of a batch kept as `batch_payload` (or, from before addresses were encrypted,
    as plain rows: those are encrypted now)."""
    if "emails" not in payload:
        sealed, emails = _sealed(payload["rows"])
        payload = {"rows": sealed, "rejects": payload["rejects"]}
        if emails:
            payload["emails"] = emails
    parts = [payload["rows"], payload["rejects"]]
    if "emails" in payload:
        parts.append(payload["emails"])
    return orjson.dumps(parts).decode()


def batch_from_message(message: str) -> tuple[list[BatchRow], list[BatchReject]]:
    """The rows (their addresses decrypted) and rejects of a batch_message (ValueError or
    TypeError if it is not one; BatchUndecryptable if the keyring cannot decrypt it)."""
    parts = orjson.loads(message)
    if not isinstance(parts, list) or len(parts) not in (2, 3):
        raise TypeError("a batch message holds rows, rejects and their addresses")
    rows, rejects, *emails = parts
    if not (isinstance(rows, list) and isinstance(rejects, list)):
        raise TypeError("a batch message holds a list of rows and a list of rejects")
    if emails:
        try:
            _unsealed(rows, emails[0])
        except DecryptionError as error:
            payload = {"rows": rows, "rejects": rejects, "emails": emails[0]}
            raise BatchUndecryptable(str(error), payload) from None
    return rows, rejects


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    stored: int
    rejected: int
    written: int  # rows that changed PostgreSQL (older duplicates are skipped)
    skipped: bool = False  # already stored, or given up on


def ingest_run_start(
    *,
    file_name: str,
    file_size: int,
    checksum: str,
    batch_size: int,
    rows: int = 0,
    count_rows: Callable[[], int] | None = None,
) -> IngestRun:
    """Record the start of a publish_csv run; a big file (`rows`: its data rows) into an empty
    or small users table makes it a bulk run, loaded with the primary key only. `count_rows`:
    when `rows` is only an upper bound (the file's lines), what counts them exactly, called
    only if the bound would make a bulk run."""
    # A bulk run's indexes are dropped before the run that wants them dropped is recorded, under
    # the index lock (ingest.bulk): no restore can slip in between.
    with bulk_run_deciding(rows=rows, count_rows=count_rows) as bulk:
        return IngestRun.objects.create(
            file_name=file_name,
            file_size=file_size,
            checksum=checksum,
            batch_size=batch_size,
            bulk=bulk,
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
    """Stop a run that could not be published completely (a bulk run's indexes come back)."""
    IngestRun.objects.filter(id=run.id).update(
        status=IngestRun.Status.FAILED, error=error, finished_at=timezone.now()
    )
    if run.bulk:
        ingest_indexes_restore()


def ingest_run_refresh(*, run_id: int) -> None:
    """Close the run once every published batch is stored or failed; a bulk run first builds
    the indexes it left out (status `indexing` meanwhile)."""
    totals = ingest_run_totals(run_id=run_id)
    now = timezone.now()
    outcome = IngestRun.Status.FAILED if totals["failed"] else IngestRun.Status.COMPLETED
    closed = IngestRun.objects.filter(
        id=run_id, status=IngestRun.Status.PUBLISHED, batches_published=totals["done"]
    ).update(
        status=Case(When(bulk=True, then=Value(IngestRun.Status.INDEXING)), default=Value(outcome)),
        rows_stored=totals["stored"],
        rows_rejected=totals["rejected"],
        batches_failed=totals["failed"],
        error=f"{totals['failed']} batch(es) failed" if totals["failed"] else "",
        stored_at=now,
        finished_at=Case(
            When(bulk=True, then=None), default=Value(now), output_field=DateTimeField()
        ),
    )
    if not closed:
        return
    run = IngestRun.objects.get(id=run_id)
    if run.status == IngestRun.Status.INDEXING:
        bulk_runs_finish()
    else:
        log_run_finished(run)


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
    stream_redactions_apply()  # deletes the stream's history missed then, likewise
    attempts, status = _begin_attempt(run_id=run_id, batch=batch, rows=len(rows) + len(rejects))
    if status != IngestBatch.Status.STARTED:
        logger.info("run %s batch %s already %s; skipping redelivery", run_id, batch, status)
        # The worker that stored it may have died building a bulk run's indexes.
        if IngestRun.objects.filter(id=run_id, status=IngestRun.Status.INDEXING).exists():
            bulk_runs_finish()
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
    # Rejects are stored with their addresses redacted (ingest.parsing); the producer's own
    # are redacted already, and again here for messages of an older producer.
    rejected = [
        RejectedRow(
            run_id=run_id, line=line, reason=redacted_reason(reason), raw=redact_addresses(raw)
        )
        for line, reason, raw in rejects
    ]
    sourced = partial(tuple.__new__, SourcedUser)  # the tuple's own C constructor
    for line, *fields in rows:
        try:
            valid.append(sourced((line, parse_row(fields))))
        except RowRejected as error:
            rejected.append(
                RejectedRow(
                    run_id=run_id,
                    line=line,
                    reason=redacted_reason(error.reason, fields),
                    raw=redacted_line(fields),
                )
            )

    try:
        written = _store(run_id=run_id, batch=batch, valid=valid, rejected=rejected)
    except ROW_DATA_ERRORS as error:
        # A row PostgreSQL refuses although it passed validation (a gap in the rules): the
        # transaction is rolled back whole; store the batch again without the rows that fail.
        # The error's first line only: psycopg adds the COPY's context, the refused value.
        logger.warning(
            "run %s batch %s: %s; finding the rows PostgreSQL refuses",
            run_id, batch, redact_addresses(_first_line(error)),
        )  # fmt: skip
        valid, refused = _without_refused_rows(run_id=run_id, batch=batch, valid=valid)
        by_line = {line: fields for line, *fields in rows}
        rejected += [
            RejectedRow(
                run_id=run_id,
                line=row.line,
                reason=redacted_reason(reason, by_line[row.line]),
                raw=redacted_line(by_line[row.line]),
            )
            for row, reason in refused
        ]
        written = _store(run_id=run_id, batch=batch, valid=valid, rejected=rejected)
    ingest_run_refresh(run_id=run_id)
    return BatchOutcome(stored=len(valid), rejected=len(rejected), written=written)


def _store(
    *, run_id: int, batch: int, valid: list[SourcedUser], rejected: list[RejectedRow]
) -> int:
    """Upsert the valid rows, record the rejects and the batch's counts, in one transaction;
    return the rows written."""
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
    return written


# What PostgreSQL raises for a value it will not store (class 22 and 23 errors), as Django
# wraps them and as psycopg raises them from the COPY (which runs on psycopg's own cursor).
ROW_DATA_ERRORS = (DataError, IntegrityError, psycopg.DataError, psycopg.IntegrityError)
# Parts of a failing batch this small are tried row by row rather than halved again.
_ROW_BY_ROW = 8


def _without_refused_rows(
    *, run_id: int, batch: int, valid: list[SourcedUser]
) -> tuple[list[SourcedUser], list[tuple[SourcedUser, str]]]:
    """Split the rows into those PostgreSQL stores and those it refuses (each with why).

    Only after a batch failed: the rows are upserted in halves, each under a savepoint that is
    rolled back (a probe: nothing is kept, and no cache write or event is queued), and a
    failing half is halved again, so k bad rows among n cost about k * log2(n) probes. A
    refused row is treated like a row that failed validation: an earlier line of its id, if
    any, stands instead (and is probed in turn). The caller then stores the rows kept as one
    upsert, like any batch."""
    refused: list[tuple[SourcedUser, str]] = []
    refused_lines: set[int] = set()
    with transaction.atomic():
        candidates = list(_latest_by_id(valid).values())  # what users_upsert would write
        while candidates:
            found = _refused_among(run_id=run_id, batch=batch, rows=candidates)
            refused += found
            refused_lines.update(row.line for row, _ in found)
            again = {row.user.id for row, _ in found}
            latest = _latest_by_id(row for row in valid if row.line not in refused_lines)
            candidates = [latest[user_id] for user_id in again if user_id in latest]
        transaction.set_rollback(True)  # nothing of the probes is kept
    kept = [row for row in valid if row.line not in refused_lines]
    refused.sort(key=lambda item: item[0].line)
    return kept, refused


def _latest_by_id(rows: Iterable[SourcedUser]) -> dict[int, SourcedUser]:
    latest: dict[int, SourcedUser] = {}
    for row in rows:  # the later line of an id wins, as in users_upsert
        latest[row.user.id] = row
    return latest


def _refused_among(
    *, run_id: int, batch: int, rows: list[SourcedUser]
) -> list[tuple[SourcedUser, str]]:
    """The rows (of distinct ids) PostgreSQL refuses, by halving the failing parts."""
    refused: list[tuple[SourcedUser, str]] = []
    parts = [rows]
    while parts:
        part = parts.pop()
        error = _probe(run_id=run_id, batch=batch, rows=part)
        if error is None:
            continue
        if len(part) == 1:
            refused.append((part[0], f"refused by PostgreSQL: {_first_line(error)}"))
        elif len(part) <= _ROW_BY_ROW:
            parts.extend([row] for row in reversed(part))
        else:
            half = len(part) // 2
            parts += [part[half:], part[:half]]
    return refused


def _probe(*, run_id: int, batch: int, rows: list[SourcedUser]) -> Exception | None:
    """Upsert the rows under a savepoint that is rolled back; the error PostgreSQL raised."""
    try:
        with transaction.atomic():
            users_upsert(run_id=run_id, batch=batch, rows=rows)
            transaction.set_rollback(True)
    except ROW_DATA_ERRORS as error:
        return error
    return None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:500] if text else type(error).__name__


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
    *,
    run_id: int,
    batch: int,
    error: str,
    rows: list[BatchRow],
    rejects: list[BatchReject],
    payload: dict | None = None,
) -> None:
    """Record a batch that will not be stored (dead letter), keeping its message (`payload`:
    as it came, when it could not be read; else the rows, their addresses encrypted)."""
    error = redact_addresses(error)  # a database error may quote a value of the batch
    logger.error("run %s batch %s failed: %s", run_id, batch, error)
    IngestBatch.objects.update_or_create(
        run_id=run_id,
        number=batch,
        defaults={
            "status": IngestBatch.Status.FAILED,
            "error": error[:2000],
            "payload": payload if payload is not None else batch_payload(rows, rejects),
        },
    )
    ingest_run_refresh(run_id=run_id)


def failed_batches_reencrypt() -> tuple[str, int, int]:
    """The failed batches' kept messages with their addresses under the current encryption key
    (a key rotation, users.email_rotation.token_holders; a message kept in plaintext before
    addresses were encrypted is sealed too). Returns what they are, how many were rewritten and
    how many are left under other keys (a key the ring no longer holds)."""
    current = settings.EMAIL_ENCRYPTION_KEYS[0][0]
    rewritten = left = 0
    kept = IngestBatch.objects.exclude(payload=None).only("id", "payload")
    for batch in kept.iterator(chunk_size=100):
        payload = batch.payload
        token = payload.get("emails") if isinstance(payload, dict) else None
        try:
            if isinstance(token, str):
                if token_key_id(token) == current:
                    continue
                plaintext = decrypt(token, context=INGEST_BATCH_CONTEXT)
                new = {**payload, "emails": encrypt(plaintext, context=INGEST_BATCH_CONTEXT)}
            elif isinstance(payload, dict) and "rows" in payload and "rejects" in payload:
                new = batch_payload(payload["rows"], payload["rejects"])
                if new == payload:  # no address in it
                    continue
            else:
                continue
        except DecryptionError:
            left += 1
            continue
        # Compare and set: a batch re-queued meanwhile keeps what it became.
        rewritten += IngestBatch.objects.filter(id=batch.id, payload=payload).update(payload=new)
    return "failed ingest batches", rewritten, left
