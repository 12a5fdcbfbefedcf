"""How far a long command has got, as it goes: a tqdm bar on a terminal, a plain line every few
seconds elsewhere (logs, CI), written to the stream it is given (a command's `self.stderr`)."""

from __future__ import annotations

import time
from typing import TextIO

from django.core.management.base import OutputWrapper
from tqdm import tqdm


def _as_is(text: str) -> str:
    return text


class _Verbatim:
    """A stream that writes text as given: Django's OutputWrapper (a command's `self.stderr`)
    would end every write with a newline, breaking tqdm's redraws of its line, and colour it
    as an error on a terminal. Everything else (encoding, fileno) is the wrapped stream's."""

    def __init__(self, stream: OutputWrapper) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(text, style_func=_as_is, ending="")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class Progress:
    """Report a growing count of rows: `update(count)` as it grows, `close()` at the end."""

    def __init__(self, stream: OutputWrapper | TextIO, label: str, every: float = 5.0) -> None:
        wrapped = stream if isinstance(stream, OutputWrapper) else OutputWrapper(stream)
        self.stream, self.label, self.every = _Verbatim(wrapped), label, every
        self.started = self.last_line = time.monotonic()
        self.bar = (
            tqdm(desc=label, unit=" rows", unit_scale=True, file=self.stream, dynamic_ncols=True)
            if wrapped.isatty()
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
        """Close the bar; return the seconds since the start."""
        if self.bar is not None:
            self.bar.close()
        return time.monotonic() - self.started
