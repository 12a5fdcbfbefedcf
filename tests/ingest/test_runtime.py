"""GC tuning of the batch processes."""

import gc

from viswals.runtime import gc_tuned_for_batches


def test_gc_tuning_is_undone_after_the_block():
    before = gc.get_threshold()
    with gc_tuned_for_batches():
        assert gc.get_threshold()[0] == 50_000
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
