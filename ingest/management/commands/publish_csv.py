"""`python manage.py publish_csv FILE`: publish a users CSV to the ingest queue."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ingest.interrupts import interrupted_by_signals, stop_requested
from ingest.models import IngestRun
from ingest.parsing import CsvFileError
from ingest.progress import Progress
from ingest.publishing import (
    DependencyUnavailable,
    PublishError,
    PublishInterrupted,
    publish_file,
    repair_cache_after_run,
    wait_for_run,
    with_database_patience,
)
from ingest.reports import (
    ReportPathError,
    check_report_path,
    report_with_addresses,
    run_report,
    write_report,
)
from viswals.runtime import gc_tuned_for_batches

USAGE_ERROR = 2
INTERRUPTED = 130  # what a shell reports for a process stopped by Ctrl-C


class Command(BaseCommand):
    help = "Stream a users CSV file to the ingest queue in batches (see docs/ingest.md)."
    # The system checks (URLs, admin, templates...) are the web's and `migrate`'s to run: they
    # added a sixth of a second to every publish (measured: 0.76 -> 0.59 s to the first line).
    requires_system_checks = []

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
            "--report-include-addresses",
            action="store_true",
            help="put the rejected lines in the report as the file has them, email addresses "
            "included (read again from the file); without it they are redacted",
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
        if options["report_include_addresses"] and not options["report"]:
            raise CommandError(
                "--report-include-addresses needs --report FILE.json", returncode=USAGE_ERROR
            )
        if options["report"]:
            try:
                check_report_path(options["report"])
            except ReportPathError as error:
                raise CommandError(
                    f"{options['report']}: cannot write report: {error}; nothing was published",
                    returncode=USAGE_ERROR,
                ) from None
        progress = Progress(self.stderr, "published")
        try:
            # A signal stops publishing between two messages.
            with gc_tuned_for_batches(), stop_requested() as stop:
                result = publish_file(
                    path=path, batch_size=batch_size, on_progress=progress.update, should_stop=stop
                )
        except CsvFileError as error:
            progress.close()
            raise CommandError(f"{path}: {error}", returncode=USAGE_ERROR) from None
        except PublishError as error:
            progress.close()
            code = INTERRUPTED if isinstance(error, PublishInterrupted) else 1
            raise CommandError(f"{path}: {error}", returncode=code) from None
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

        progress = Progress(self.stderr, "stored")
        try:
            # Waiting holds no broker connection: a signal may stop it anywhere.
            with interrupted_by_signals():
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
            report = options["report"] and with_database_patience(lambda: run_report(run=run))
        except DependencyUnavailable as error:
            raise CommandError(self._stopped_waiting(run.id, error)) from None
        if stale:
            self.stderr.write(
                f"warning: {stale} users may be stale in Redis (it could not be reached); "
                "run `python manage.py repair_cache` once it is back"
            )
        if report:
            try:
                if options["report_include_addresses"]:
                    report = report_with_addresses(report=report, run=run, path=path)
                write_report(report=report, path=options["report"])
            except ReportPathError as error:
                raise CommandError(f"{options['report']}: cannot write report: {error}") from None
            self.stdout.write(f"report written to {options['report']}")
        if run.status == IngestRun.Status.FAILED:
            raise CommandError(f"run {run.id} failed: {run.error}")

    @staticmethod
    def _stopped_waiting(run_id: int, error: DependencyUnavailable) -> str:
        return (
            f"stopped waiting: {error}; run {run_id} goes on in the workers (its status is in "
            "the admin, under Ingest runs)"
        )
