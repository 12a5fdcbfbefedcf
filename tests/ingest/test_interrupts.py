"""Signals while publish_csv publishes or waits (ingest/interrupts.py), raised in this process."""

from __future__ import annotations

import signal
import threading

import pytest

from ingest.interrupts import interrupted_by_signals, stop_requested

SIGNALS = [signal.SIGINT, signal.SIGTERM]


@pytest.mark.parametrize("sig", SIGNALS)
def test_first_signal_asks_to_stop_and_a_second_stops_at_once(sig):
    with stop_requested() as stop:
        assert not stop()
        signal.raise_signal(sig)
        assert stop()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(sig)


@pytest.mark.parametrize("sig", SIGNALS)
def test_waiting_is_interrupted_by_either_signal(sig):
    with pytest.raises(KeyboardInterrupt), interrupted_by_signals():
        signal.raise_signal(sig)


def test_handlers_are_restored_after_the_block():
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    with stop_requested():
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    with interrupted_by_signals():
        pass
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before


def test_signals_are_left_alone_outside_the_main_thread():
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    seen = {}

    def publish() -> None:
        with stop_requested() as stop:
            seen["handlers"] = {sig: signal.getsignal(sig) for sig in SIGNALS}
            seen["stop"] = stop()

    thread = threading.Thread(target=publish)
    thread.start()
    thread.join()

    assert seen == {"handlers": before, "stop": False}
