"""The JSON report of a run that `publish_csv --report FILE.json` writes: its totals and its
rejected rows. The path is checked before anything is published, the report written once the
workers are done.

Rejected rows are stored with their addresses redacted (ingest.parsing.REDACTED), and reported
so. Only `--report-include-addresses` puts them in: the rejected lines are read again from the
published file, which must be the one the run published (same SHA-256)."""

from __future__ import annotations

import json
import os
import tempfile

from ingest.models import IngestRun
from ingest.parsing import read_records, to_csv_line
from ingest.publishing import file_checksum


class ReportPathError(Exception):
    """The report could not be written: found out before anything is published, or when it is
    written."""


def check_report_path(path: str) -> None:
    """Raise ReportPathError unless a report can be written at `path`: checked before a run
    starts, so a typo does not cost a whole ingest before it shows."""
    if os.path.isdir(path):
        raise ReportPathError("is a directory, not a file")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ReportPathError(f"directory {directory} does not exist")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ReportPathError("permission denied")
    try:  # what os.access cannot tell: a read-only file system, root's view of permissions
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".publish_csv-", suffix=".tmp"):
            pass
    except OSError as error:
        raise ReportPathError(f"directory {directory} is not writable: {error.strerror}") from None


def run_report(*, run: IngestRun) -> dict:
    """The run's totals and its rejected rows (by line), as the report holds them."""
    rejected = run.rejected_rows.order_by("line").values("line", "reason", "raw")
    return {
        "run": run.id,
        "published": run.rows_published,
        "stored": run.rows_stored,
        "rejected": list(rejected.iterator()),
    }


def report_with_addresses(*, report: dict, run: IngestRun, path: str) -> dict:
    """The report with each rejected row's original line, read again from `path` (addresses
    included); ReportPathError if the file is gone or is not the one the run published."""
    try:
        checksum, _ = file_checksum(path)
    except OSError as error:
        raise ReportPathError(f"cannot read {path} again: {error.strerror}") from None
    if checksum != run.checksum:
        raise ReportPathError(f"{path} changed since run {run.id} published it")
    wanted = {row["line"] for row in report["rejected"]}
    original: dict[int, str] = {}
    with open(path, "rb") as stream:
        for record in read_records(stream):
            if record.line in wanted:
                fields = record.fields
                original[record.line] = to_csv_line(fields) if fields is not None else record.raw
    rejected = [{**row, "raw": original.get(row["line"], row["raw"])} for row in report["rejected"]]
    return {**report, "rejected": rejected}


def write_report(*, report: dict, path: str) -> None:
    """Write the report as JSON at `path`; ReportPathError (the system's reason) if it cannot."""
    try:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(report, out, ensure_ascii=False, indent=1)
    except OSError as error:
        raise ReportPathError(error.strerror) from None
