"""The progress display of publish_csv (ingest/progress.py), on a stream of the test's own."""

from __future__ import annotations

import io

from django.core.management.base import OutputWrapper
from django.core.management.color import color_style

from ingest.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    progress = Progress(OutputWrapper(out), "published", every=0)

    progress.update(100)
    progress.update(250)
    seconds = progress.close()

    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["published: 100 rows", "published: 250 rows"]
    assert all(line.endswith(" rows/s") for line in lines)
    assert "\r" not in out.getvalue()
    assert seconds >= 0


def test_no_line_before_the_interval_has_passed():
    out = io.StringIO()
    progress = Progress(out, "stored", every=3600)

    progress.update(100)
    progress.close()

    assert out.getvalue() == ""


def test_a_bar_redrawn_in_place_on_a_terminal_through_a_commands_stderr():
    terminal = Terminal()
    stderr = OutputWrapper(terminal)
    stderr.style_func = color_style(force_color=True).ERROR  # as BaseCommand sets it

    progress = Progress(stderr, "published")
    for count in (1000, 2000, 3000):
        progress.update(count)
    progress.close()

    text = terminal.getvalue()
    assert "published" in text and "3.00k" in text
    assert "\r" in text
    assert text.count("\n") <= 1  # redraws stay on one line (the last newline ends the bar)
    assert "\x1b[31" not in text  # not coloured as an error
