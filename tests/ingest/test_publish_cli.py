"""publish_csv as a user runs it: a process, its exit code and what it prints."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from ingest.indexes import users_indexes_status
from ingest.models import IngestRun
from tests.support.data import HEADER
from tests.support.environment import ROOT, TEST_ENV, subprocess_env
from tests.support.waits import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def run_publish(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "publish_csv", *args],
        cwd=ROOT,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_column_exits_2_with_one_line_naming_file_and_problem(write_csv):
    path = write_csv("id,first_name,last_name\n1,Ann,Lee\n")
    result = run_publish(path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert path in line and "missing required column(s)" in line and "line 1" in line
    assert not IngestRun.objects.exists()


@pytest.mark.parametrize(
    "report, problem",
    [
        ("/nonexistent/dir/r.json", "directory /nonexistent/dir does not exist"),
        ("{tmp}", "is a directory, not a file"),
        ("{tmp}/file.csv/r.json", "directory {tmp}/file.csv does not exist"),
    ],
)
def test_unwritable_report_exits_2_before_publishing(write_csv, tmp_path, report, problem):
    path = write_csv(f"{HEADER}\n1,Ann,Lee,ann@example.com,1600000000000,-1,-1,-1\n")
    (tmp_path / "file.csv").write_text("")
    report = report.format(tmp=tmp_path)
    started = time.monotonic()
    # A queue nobody consumes: were anything published, --wait would wait for it.
    result = run_publish(path, "--report", report, INGEST_QUEUE="nobody-consumes-this")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    problem = problem.format(tmp=tmp_path)
    assert line == f"CommandError: {report}: cannot write report: {problem}; nothing was published"
    assert not IngestRun.objects.exists()
    assert time.monotonic() - started < 30
    assert sorted(tmp_path.iterdir()) == [tmp_path / "file.csv", tmp_path / "users-0.csv"]


ONE_ROW = f"{HEADER}\n1,Ann,Lee,ann@example.com,1600000000000,-1,-1,-1\n"


def failed_without_traceback(path: str, **env: str) -> subprocess.CompletedProcess:
    """publish_csv of `path` with this environment, which must fail (exit 1) in plain words."""
    result = run_publish(path, **env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_broker_that_stays_away_fails_the_run_clearly(write_csv):
    result = failed_without_traceback(
        write_csv(ONE_ROW),
        CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:1//",
        INGEST_PUBLISH_RETRIES="1",
    )
    assert "broker unavailable while publishing batch 1" in result.stderr
    assert "run the command again" in result.stderr
    run = IngestRun.objects.get()
    assert run.status == IngestRun.Status.FAILED
    assert "broker unavailable" in run.error


def test_a_broker_refusal_fails_the_bulk_run_and_brings_the_indexes_back(write_csv):
    from viswals.celery import app

    rows = "".join(f"{i},N,L,u{i}@example.com,1600000000000,-1,-1,-1\n" for i in range(1, 41))
    path = write_csv(f"{HEADER}\n{rows}")
    # A queue declared with other arguments than ours: RabbitMQ refuses the publisher's
    # declaration with PRECONDITION_FAILED, a channel error (as for a message over its
    # max_message_size), not a lost connection.
    queue = f"{TEST_ENV['INGEST_QUEUE']}-refused"
    with app.connection_for_write() as connection:
        connection.default_channel.queue_declare(queue, durable=False, auto_delete=False)
    try:
        result = failed_without_traceback(
            path, INGEST_QUEUE=queue, INGEST_BULK_MIN_ROWS="10", INGEST_PUBLISH_RETRIES="1"
        )
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)

    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"CommandError: {path}: publishing failed at batch 1 (up to line ")
    assert "PRECONDITION_FAILED" in line and "run the command again" in line
    run = IngestRun.objects.get()
    assert run.bulk, "the file was big enough to drop the indexes"
    assert run.status == IngestRun.Status.FAILED and run.finished_at is not None
    assert "PRECONDITION_FAILED" in run.error
    assert users_indexes_status().complete


def test_progress_is_plain_lines_when_not_a_terminal(write_csv, celery_worker_process):
    rows = "".join(
        f"{i},N{i},L{i},u{i}@example.com,1600000000000,-1,-1,-1\n" for i in range(1, 301)
    )
    path = write_csv(f"{HEADER}\n{rows}")
    result = run_publish(path, "--batch-size", "100", "--wait", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr  # no progress-bar redraws in logs
    assert "published 300 rows in 3 batches" in result.stdout
    assert "completed: 300 stored, 0 rejected" in result.stdout


def publishing(process: subprocess.Popen, queue: str) -> bool:
    """Whether batches are reaching `queue` (a process that exited fails the wait at once)."""
    from viswals.celery import app

    assert process.poll() is None, process.communicate()
    with app.connection_for_write() as connection:
        try:
            return connection.default_channel.queue_declare(queue, passive=True).message_count > 0
        except Exception:  # not declared yet (a passive declare of a missing queue fails)
            return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_publish_records_the_run_and_says_how_to_finish(write_csv, sig):
    from viswals.celery import app

    rows = "".join(f"{i},N,L,u{i}@example.com,1600000000000,-1,-1,-1\n" for i in range(1, 300_001))
    path = write_csv(f"{HEADER}\n{rows}")
    queue = f"{TEST_ENV['INGEST_QUEUE']}-interrupted"  # no worker listens here
    process = subprocess.Popen(
        [sys.executable, "manage.py", "publish_csv", path, "--batch-size", "1000"],
        cwd=ROOT,
        env=subprocess_env(INGEST_QUEUE=queue),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: publishing(process, queue), 60, "publishing did not start")
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert "interrupted while publishing (up to line" in line
    assert "run the command again" in line
    run = IngestRun.objects.get()
    assert run.status == IngestRun.Status.FAILED
    assert run.error.startswith("interrupted while publishing")


def test_unreachable_database_exits_in_one_line(write_csv):
    path = write_csv(ONE_ROW)
    result = failed_without_traceback(
        path,
        DATABASE_URL="postgres://postgres@127.0.0.1:1/nothing",
        INGEST_WAIT_DEPENDENCY_PATIENCE="1",
    )
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"CommandError: {path}: cannot record the run: PostgreSQL unreachable")
