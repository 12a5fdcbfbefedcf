"""Importing an uploaded CSV file (the admin's "Import users" page).

The upload is streamed to a temporary file on disk, never held in memory, and refused once it
passes `ADMIN_IMPORT_MAX_BYTES` (a body declaring more than that, plus
ADMIN_IMPORT_MULTIPART_SLACK, is refused before Django reads it; so is any body over the admin's
usual limit from a client whose session cookie is not that of an account that may import,
users.access.may_import: viswals/request_limits.py). The
file is then published by the same producer as `publish_csv` (ingest.publishing.publish_file:
same CSV contract, batch limits and IngestRun record) in a background thread of the web
process, which deletes the file when it is done.
The file lives on the web process' disk, so the thread publishes it there (a Celery worker on
another host could not read it); the workers store its batches as they do any run's.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import tempfile
import threading

from django.conf import settings
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.db import connections

from ingest.models import IngestRun
from ingest.parsing import CsvFileError
from ingest.publishing import PublishError, publish_file

logger = logging.getLogger(__name__)

# Seconds the upload request waits for the run to be recorded (the file's checksum is read
# first: about a second per 300 MB here).
START_TIMEOUT = 60.0


class UploadTooLarge(Exception):
    """The upload is over ADMIN_IMPORT_MAX_BYTES."""


class ImportBusy(Exception):
    """This process already publishes as many uploads as it may at once."""


def too_large_message() -> str:
    limit = settings.ADMIN_IMPORT_MAX_BYTES
    return (
        f"The file is larger than the import limit of {limit / 2**20:,.1f} MiB "
        f"(ADMIN_IMPORT_MAX_BYTES = {limit} bytes). Publish it with "
        "`python manage.py publish_csv FILE` instead."
    )


class LimitedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Writes the upload to a temporary file as it arrives and stops reading it (the rest of
    the request body is not read) once it passes the limit; `too_large` then says so."""

    def __init__(self, request=None, max_bytes: int | None = None) -> None:
        super().__init__(request)
        self.max_bytes = settings.ADMIN_IMPORT_MAX_BYTES if max_bytes is None else max_bytes
        self.received = 0
        self.too_large = False

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        # A declared length far past the limit: stop before the first byte of the file.
        if (
            content_length
            and content_length > self.max_bytes + settings.ADMIN_IMPORT_MULTIPART_SLACK
        ):
            self.too_large = True
        return super().handle_raw_input(input_data, META, content_length, boundary, encoding)

    def new_file(self, *args, **kwargs):
        if self.too_large:
            raise StopUpload(connection_reset=True)
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self.too_large = True
            raise StopUpload(connection_reset=True)
        return super().receive_data_chunk(raw_data, start)


_SAFE_NAME = re.compile(r"[^\w.\- ]+")


def upload_name(name: str) -> str:
    """The name an upload is recorded under: its base name, printable, at most 200 chars."""
    base = os.path.basename(name.replace("\\", "/")) or "upload.csv"
    return "upload: " + (_SAFE_NAME.sub("_", base)[:200] or "upload.csv")


_slots: threading.BoundedSemaphore | None = None
_slots_lock = threading.Lock()


def _import_slots() -> threading.BoundedSemaphore:
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(settings.ADMIN_IMPORT_CONCURRENCY)
        return _slots


def keep_upload(temporary_path: str) -> str:
    """Move an upload's temporary file where the request's end will not delete it."""
    handle, path = tempfile.mkstemp(prefix="viswals-import-", suffix=".csv")
    os.close(handle)
    os.replace(temporary_path, path)
    return path


def publish_upload(*, path: str, file_name: str) -> IngestRun:
    """Publish an uploaded file in a background thread; return its run once it is recorded.

    Raises CsvFileError when the file cannot be published at all (no header, not UTF-8 text),
    ImportBusy when this process publishes ADMIN_IMPORT_CONCURRENCY uploads already. The file
    is deleted once published (or refused).
    """
    slots = _import_slots()
    if not slots.acquire(blocking=False):
        os.unlink(path)
        raise ImportBusy(
            f"{settings.ADMIN_IMPORT_CONCURRENCY} import(s) are being published already; "
            "try again when one has finished."
        )
    started: queue.Queue[IngestRun | Exception] = queue.Queue(maxsize=1)
    thread = threading.Thread(
        target=_publish, args=(path, file_name, started, slots), name="admin-import"
    )
    thread.start()
    try:
        outcome = started.get(timeout=START_TIMEOUT)
    except queue.Empty:
        raise CsvFileError(
            "the run is taking long to start; it will appear under Ingest runs"
        ) from None
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _publish(path: str, file_name: str, started: queue.Queue, slots) -> None:
    recorded = threading.Event()

    def on_start(run: IngestRun) -> None:
        recorded.set()
        started.put(run)

    try:
        result = publish_file(
            path=path,
            batch_size=settings.INGEST_BATCH_SIZE,
            file_name=file_name,
            on_start=on_start,
        )
        logger.info("admin import: run %s published %d rows", result.run.id, result.rows)
    except Exception as error:  # the run, if recorded, says what happened (status, error)
        if not recorded.is_set():
            started.put(error if isinstance(error, CsvFileError) else CsvFileError(str(error)))
        if isinstance(error, CsvFileError):
            logger.info("admin import: %s refused: %s", file_name, error)
        elif isinstance(error, PublishError):
            logger.error("admin import: publishing %s stopped: %s", file_name, error)
        else:
            logger.exception("admin import: publishing %s failed", file_name)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        connections.close_all()  # this thread's own connections
        slots.release()
