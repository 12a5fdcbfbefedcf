"""`python manage.py publish_csv FILE`: publish a users CSV to the ingest queue."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from contextlib import contextmanager

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ingest.models import IngestRun
from ingest.parsing import CsvFileError
from ingest.publishing import (
    DependencyUnavailable,
    PublishError,
    PublishInterrupted,
    ReportPathError,
    check_report_path,
    publish_file,
    repair_cache_after_run,
    wait_for_run,
    with_database_patience,
)
from viswals.runtime import gc_tuned_for_batches

USAGE_ERROR = 2
INTERRUPTED = 130  # what a shell reports for a process stopped by Ctrl-C


class StopRequest:
    """Ctrl-C or SIGTERM while publishing: finish the message being sent, then stop. (Cut off
    mid-frame, the broker connection could not even be closed.) A second signal stops at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


@contextmanager
def signals_handled_by(handler):
    """SIGINT and SIGTERM (docker compose stop, a supervisor) go to `handler` in the block.
    Signal handlers belong to the main thread; elsewhere (call_command from a thread) the
    signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Progress:
    """A tqdm bar on a terminal; a plain line every few seconds otherwise (logs, CI)."""

    def __init__(self, stream, label: str, interactive: bool, every: float = 5.0) -> None:
        self.stream, self.label, self.every = stream, label, every
        self.started = self.last_line = time.monotonic()
        self.bar = (
            tqdm(desc=label, unit=" rows", unit_scale=True, file=stream, dynamic_ncols=True)
            if interactive
            else None
        )
        self.count = 0

    def update(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count - self.count)
        elif time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            self.stream.write(f"{self.label}: {count} rows, {self.rate(count):,.0f} rows/s\n")
        self.count = count

    def rate(self, count: int) -> float:
        return count / max(time.monotonic() - self.started, 1e-9)

    def close(self) -> float:
        if self.bar is not None:
            self.bar.close()
        return time.monotonic() - self.started


class Command(BaseCommand):
    help = "Stream a users CSV file to the ingest queue in batches (see README)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", help="the CSV file")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=settings.INGEST_BATCH_SIZE,
            help=f"rows per task (default {settings.INGEST_BATCH_SIZE})",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="block until workers have stored every row, then print totals",
        )
        parser.add_argument(
            "--report",
            metavar="FILE.json",
            help="write the run's totals and rejected rows as JSON (implies --wait)",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=3600,
            help="seconds --wait waits for workers (default 3600)",
        )

    def handle(self, *args, **options) -> None:
        path, batch_size = options["path"], options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1", returncode=USAGE_ERROR)
        if options["report"]:
            try:
                check_report_path(options["report"])
            except ReportPathError as error:
                raise CommandError(
                    f"{options['report']}: cannot write report: {error}; nothing was published",
                    returncode=USAGE_ERROR,
                ) from None
        interactive = sys.stderr.isatty()
        progress = Progress(self.stderr._out, "published", interactive)
        stop = StopRequest()
        try:
            with gc_tuned_for_batches(), signals_handled_by(stop.handle):
                result = publish_file(
                    path=path, batch_size=batch_size, on_progress=progress.update, should_stop=stop
                )
        except CsvFileError as error:
            progress.close()
            raise CommandError(f"{path}: {error}", returncode=USAGE_ERROR) from None
        except PublishError as error:
            progress.close()
            code = INTERRUPTED if isinstance(error, PublishInterrupted) else 1
            raise CommandError(str(error), returncode=code) from None
        except DependencyUnavailable as error:
            progress.close()
            raise CommandError(f"{path}: cannot record the run: {error}") from None
        progress.update(result.rows)
        seconds = progress.close()
        run = result.run
        self.stdout.write(
            f"run {run.id}: published {result.rows} rows in {result.batches} batches "
            f"({result.rows / max(seconds, 1e-9):,.0f} rows/s, {seconds:.1f}s); "
            f"{result.rejected_early} rejected while reading"
        )
        if not (options["wait"] or options["report"]):
            return

        progress = Progress(self.stderr._out, "stored", interactive)
        try:
            # Waiting holds no broker connection: a signal may stop it anywhere.
            with signals_handled_by(signal.default_int_handler):
                run = wait_for_run(
                    run_id=run.id, timeout=options["timeout"], on_progress=progress.update
                )
        except TimeoutError as error:
            progress.close()
            raise CommandError(str(error)) from None
        except DependencyUnavailable as error:
            progress.close()
            raise CommandError(self._stopped_waiting(run.id, error)) from None
        except KeyboardInterrupt:
            progress.close()
            raise CommandError(
                f"stopped waiting; run {run.id} goes on in the workers (its status is in the "
                "admin, under Ingest runs)",
                returncode=INTERRUPTED,
            ) from None
        progress.update(run.rows_stored + run.rows_rejected)
        progress.close()
        self.stdout.write(
            f"run {run.id} {run.status}: {run.rows_stored} stored, {run.rows_rejected} rejected"
            + (f", {run.batches_failed} batch(es) failed" if run.batches_failed else "")
        )
        try:
            stale = repair_cache_after_run()
            report = options["report"] and with_database_patience(lambda: self._report(run))
        except DependencyUnavailable as error:
            raise CommandError(self._stopped_waiting(run.id, error)) from None
        if stale:
            self.stderr.write(
                f"warning: {stale} users may be stale in Redis (it could not be reached); "
                "run `python manage.py repair_cache` once it is back"
            )
        if report:
            self._write_report(report, options["report"])
        if run.status == IngestRun.Status.FAILED:
            raise CommandError(f"run {run.id} failed: {run.error}")

    @staticmethod
    def _stopped_waiting(run_id: int, error: DependencyUnavailable) -> str:
        return (
            f"stopped waiting: {error}; run {run_id} goes on in the workers (its status is in "
            "the admin, under Ingest runs)"
        )

    @staticmethod
    def _report(run: IngestRun) -> dict:
        rejected = run.rejected_rows.order_by("line").values("line", "reason", "raw")
        return {
            "run": run.id,
            "published": run.rows_published,
            "stored": run.rows_stored,
            "rejected": list(rejected.iterator()),
        }

    def _write_report(self, report: dict, report_path: str) -> None:
        try:
            with open(report_path, "w", encoding="utf-8") as out:
                json.dump(report, out, ensure_ascii=False, indent=1)
        except OSError as error:
            raise CommandError(f"{report_path}: cannot write report: {error.strerror}") from None
        self.stdout.write(f"report written to {report_path}")
