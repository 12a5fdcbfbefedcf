"""The Celery application; tasks are discovered in each app's tasks.py."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "viswals.settings")

app = Celery("viswals")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Log lines of a task carry its ingest run id and batch number (viswals.logging).
@signals.task_prerun.connect
def _bind_task_log_context(task=None, args=None, kwargs=None, **_) -> None:
    from viswals.logging import bind_task_context

    bind_task_context(task, args, kwargs)


@signals.task_postrun.connect
def _clear_task_log_context(**_) -> None:
    from viswals.logging import clear_task_context

    clear_task_context()


@signals.worker_process_init.connect
def _tune_gc_for_batches(**_) -> None:
    from viswals.runtime import tune_gc_for_batches

    tune_gc_for_batches()
