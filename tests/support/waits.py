"""The one way tests wait: poll a condition until it holds, or fail saying what did not happen.

A test never sleeps to let something happen; it waits for the thing itself. (Deliberate pacing,
such as a sender slower than a timeout, is a sleep, with a comment saying why.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float = 10,
    message: str = "condition not met in time",
    *,
    interval: float = 0.05,
) -> T:
    """Call `condition` until it returns something true (and return that); an AssertionError
    with `message` once `timeout` seconds have passed. An exception `condition` raises goes
    through: a condition that can tell it will never hold fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{message} (waited {timeout:g} s)"
        time.sleep(interval)
