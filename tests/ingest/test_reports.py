"""The --report file of publish_csv (ingest/reports.py): checked before publishing, written
after the wait."""

from __future__ import annotations

import json

import pytest

from ingest.models import IngestRun, RejectedRow
from ingest.reports import ReportPathError, check_report_path, run_report, write_report


@pytest.mark.django_db
def test_report_holds_the_totals_and_the_rejected_rows_by_line():
    run = IngestRun.objects.create(
        file_name="users.csv", file_size=10, checksum="0" * 64, batch_size=2,
        rows_published=4, rows_stored=2,
    )  # fmt: skip
    RejectedRow.objects.create(run=run, line=5, reason="email_address: invalid", raw="5,x")
    RejectedRow.objects.create(run=run, line=3, reason="too few fields", raw="3,y")

    assert run_report(run=run) == {
        "run": run.id,
        "published": 4,
        "stored": 2,
        "rejected": [
            {"line": 3, "reason": "too few fields", "raw": "3,y"},
            {"line": 5, "reason": "email_address: invalid", "raw": "5,x"},
        ],
    }


def test_report_is_written_as_utf8_json(tmp_path):
    path = tmp_path / "report.json"
    report = {"run": 1, "rejected": [{"line": 2, "reason": "bad", "raw": "Zoë,😀"}]}

    write_report(report=report, path=str(path))

    assert json.loads(path.read_text(encoding="utf-8")) == report
    assert "Zoë" in path.read_text(encoding="utf-8")  # as written, not \u-escaped


def test_a_report_that_cannot_be_written_says_why(tmp_path):
    with pytest.raises(ReportPathError, match="Is a directory"):
        write_report(report={}, path=str(tmp_path))


def test_report_path_is_checked_without_leaving_a_file(tmp_path):
    check_report_path(str(tmp_path / "report.json"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ReportPathError, match="is a directory, not a file"):
        check_report_path(str(tmp_path))
    with pytest.raises(ReportPathError, match="does not exist"):
        check_report_path(str(tmp_path / "missing" / "report.json"))
