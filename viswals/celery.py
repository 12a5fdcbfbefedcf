"""The Celery application; tasks are discovered in each app's tasks.py."""

import os

import orjson
from celery import Celery, signals
from kombu.serialization import register

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "viswals.settings")

# Task messages as JSON written and read by orjson (settings.CELERY_TASK_SERIALIZER): an ingest
# batch is 5,000 rows of nine values, and the standard json module's encoder was about 40% of
# the producer's CPU (measured: 1.6 -> 0.2 us per row to encode, 1.8 -> 1.4 to decode, 11%
# fewer bytes). The bytes are plain JSON; workers still accept the standard "json" type too.
register(
    "orjson",
    orjson.dumps,
    orjson.loads,
    content_type="application/x-orjson",
    content_encoding="binary",
)

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
