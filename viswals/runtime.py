"""Process tuning shared by the batch processes (Celery workers and publish_csv)."""

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def tune_gc_for_batches() -> None:
    """Collect garbage less often in a process that works through big batches.

    A batch of 10,000 rows makes ~200k short-lived objects; with Python's default threshold (700
    allocations) the collector runs some hundred times per batch, and its full passes walk
    Django's and Celery's whole heap. Freeze what start-up made (never garbage; after a fork it
    also keeps pages shared) and collect the young generation every 50k allocations instead:
    a few MB of garbage at most. Measured end to end: worker CPU 42 -> 34 us per row, producer
    6.4 -> 4.2-5.8 us per row.
    """
    gc.freeze()
    gc.set_threshold(50_000)


@contextmanager
def gc_tuned_for_batches() -> Iterator[None]:
    """tune_gc_for_batches() for the length of a block, then as before (a management command
    may run inside another process: tests, a shell)."""
    threshold = gc.get_threshold()
    tune_gc_for_batches()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
