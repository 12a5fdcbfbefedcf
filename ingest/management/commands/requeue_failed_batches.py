"""`python manage.py requeue_failed_batches RUN`: publish a run's dead-lettered batches again."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ingest.models import IngestRun
from ingest.publishing import requeue_failed_batches, wait_for_run


class Command(BaseCommand):
    help = "Publish the failed batches of an ingest run again (their messages are kept)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("run", type=int, help="the ingest run id (see the admin)")
        parser.add_argument("--wait", action="store_true", help="wait until they are stored")
        parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait")

    def handle(self, *args, **options) -> None:
        run_id = options["run"]
        if not IngestRun.objects.filter(id=run_id).exists():
            raise CommandError(f"no ingest run {run_id}", returncode=2)
        count = requeue_failed_batches(run_id=run_id)
        self.stdout.write(f"run {run_id}: re-queued {count} failed batch(es)")
        if not count or not options["wait"]:
            return
        try:
            run = wait_for_run(run_id=run_id, timeout=options["timeout"])
        except TimeoutError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"run {run.id} {run.status}: {run.rows_stored} stored, {run.rows_rejected} rejected"
        )
        if run.status == IngestRun.Status.FAILED:
            raise CommandError(f"run {run.id} failed again: {run.error}")
