"""Ctrl-C and SIGTERM (docker compose stop, a supervisor) while a command publishes or waits.

Publishing asks to stop and is stopped between two messages (`stop_requested`: cut off
mid-frame, the broker connection could not even be closed); waiting holds no broker connection
and is interrupted anywhere (`interrupted_by_signals`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class StopRequest:
    """Says whether a stop was asked for (call it): the first signal asks, finishing the message
    being sent; a second one stops at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


@contextmanager
def signals_handled_by(handler) -> Iterator[None]:
    """SIGINT and SIGTERM go to `handler` in the block. Signal handlers belong to the main
    thread; elsewhere (call_command from a thread) the signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def stop_requested() -> Iterator[StopRequest]:
    """In the block, a signal asks the StopRequest given to stop (`should_stop` of
    ingest.publishing.publish_file); a second one raises KeyboardInterrupt."""
    stop = StopRequest()
    with signals_handled_by(stop.handle):
        yield stop


@contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """In the block, SIGINT and SIGTERM both raise KeyboardInterrupt."""
    with signals_handled_by(signal.default_int_handler):
        yield
