"""No email address of a published file rests in plaintext where this project keeps ingest's
traces: the broker's messages carry them encrypted, the rejected rows in PostgreSQL and
`--report` files hold them redacted unless `--report-include-addresses` asks for them, failed
batches keep them encrypted (docs/security.md, "Email addresses at rest")."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import orjson
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

from ingest.models import IngestBatch, IngestRun, RejectedRow
from ingest.parsing import REDACTED
from ingest.publishing import ENVELOPE_BYTES, file_checksum, publish_file
from ingest.reports import ReportPathError, report_with_addresses, run_report
from ingest.services import (
    batch_from_message,
    batch_message,
    batch_payload,
    batch_payload_message,
    ingest_batch_fail,
)
from ingest.tasks import store_batch
from tests.support.broker import queue_bodies, queue_delete
from tests.support.data import HEADER
from tests.support.waits import wait_until
from users.models import User

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

# Every address of the file below, whatever line or column it is on.
ADDRESSES = (
    "ann.stored@example.com",
    "bad.id@example.com",
    "short.row@example.com",
    "bob@bold",
    "in.a.name@example.com",
    "quote.broken@example.com",
    "no.created@example.com",
)
CSV = (
    f"{HEADER}\n"
    "1,Ann,Lee,ann.stored@example.com,1600000000123,-1,-1,-1\n"
    "abc,Bad,Id,bad.id@example.com,1600000000000,-1,-1,-1\n"
    "3,Short,short.row@example.com\n"
    "4,Bob,Bold,bob@bold,1600000000000,-1,-1,-1\n"
    "5,in.a.name@example.com,Moss,,1600000000000,-1,-1,-1\n"
    '6,"Quote,Broken,quote.broken@example.com,1600000000000,-1,-1,-1\n'
    "7,Eve,Moss,no.created@example.com,,-1,-1,-1\n"
    "8,Plain,Wrong,not-an-email,1600000000000,-1,-1,-1\n"
)


def stored_rejects_text() -> str:
    """Everything PostgreSQL holds of the rejected rows, as one text."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT line, reason, raw FROM ingest_rejectedrow ORDER BY line")
        return "\n".join(" | ".join(map(str, row)) for row in cursor.fetchall())


def test_rejected_rows_and_the_report_hold_no_address(celery_worker_process, write_csv, tmp_path):
    path = write_csv(CSV)
    report_path = tmp_path / "report.json"

    call_command("publish_csv", path, "--timeout", "60", "--report", str(report_path))

    report_text = report_path.read_text()
    report = json.loads(report_text)
    rejects = stored_rejects_text()
    for address in ADDRESSES[1:]:
        assert address not in report_text and address not in rejects
    assert "ann.stored@example.com" not in report_text  # stored, so not reported at all
    assert User.objects.get(id=1).email_address == "ann.stored@example.com"
    # The line, its reason and its other values are kept; only the addresses are redacted.
    by_line = {row["line"]: row for row in report["rejected"]}
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 9]
    assert by_line[3] == {
        "line": 3,
        "reason": "id: not an integer: 'abc'",
        "raw": f"abc,Bad,Id,{REDACTED},1600000000000,-1,-1,-1",
    }
    assert by_line[4] == {
        "line": 4,
        "reason": "expected 8 fields, found 3",
        "raw": f"3,Short,{REDACTED}",
    }
    assert by_line[5]["reason"] == f"email_address: not a valid email address: '{REDACTED}'"
    assert by_line[6]["raw"] == f"5,{REDACTED},Moss,,1600000000000,-1,-1,-1"
    assert by_line[7]["reason"].startswith("malformed CSV quoting")
    assert by_line[9] == {
        "line": 9,
        "reason": "email_address: not a valid email address: 'not-an-email'",
        "raw": "8,Plain,Wrong,not-an-email,1600000000000,-1,-1,-1",
    }
    assert RejectedRow.objects.count() == 7


def test_the_report_holds_the_original_lines_only_when_asked(
    celery_worker_process, write_csv, tmp_path
):
    path = write_csv(CSV)
    report_path = tmp_path / "report.json"

    call_command(
        "publish_csv", path, "--timeout", "60",
        "--report", str(report_path), "--report-include-addresses",
    )  # fmt: skip

    raws = {row["line"]: row["raw"] for row in json.loads(report_path.read_text())["rejected"]}
    assert raws[3] == "abc,Bad,Id,bad.id@example.com,1600000000000,-1,-1,-1"
    assert raws[4] == "3,Short,short.row@example.com"
    assert raws[7] == '6,"Quote,Broken,quote.broken@example.com,1600000000000,-1,-1,-1'
    # PostgreSQL still holds them redacted: the originals came from the file.
    assert all(address not in stored_rejects_text() for address in ADDRESSES)


def test_report_include_addresses_needs_a_report(write_csv):
    with pytest.raises(CommandError, match="needs --report"):
        call_command("publish_csv", write_csv(CSV), "--report-include-addresses")


def test_a_report_with_addresses_needs_the_file_the_run_published(write_csv):
    path = write_csv(CSV)
    checksum, size = file_checksum(path)
    run = IngestRun.objects.create(
        file_name=path, file_size=size, checksum=checksum, batch_size=10, rows_published=8
    )
    RejectedRow.objects.create(run=run, line=4, reason="expected 8 fields, found 3", raw="x")
    report = run_report(run=run)

    full = report_with_addresses(report=report, run=run, path=path)
    assert full["rejected"][0]["raw"] == "3,Short,short.row@example.com"

    with open(path, "a") as changed:
        changed.write("9,New,Line,new@example.com,1600000000000,-1,-1,-1\n")
    with pytest.raises(ReportPathError, match="changed since run"):
        report_with_addresses(report=report, run=run, path=path)


def test_a_dead_letter_and_its_log_line_hold_no_address(caplog):
    run = IngestRun.objects.create(file_name="f.csv", file_size=1, checksum="0" * 64, batch_size=1)
    error = 'database error: bad value\nCONTEXT: COPY t, line 1, column email_address: "x@y.org"'

    ingest_batch_fail(run_id=run.id, batch=1, error=error, rows=[], rejects=[])

    assert "x@y.org" not in IngestBatch.objects.get(run=run, number=1).error
    assert "x@y.org" not in caplog.text and REDACTED in caplog.text


# RabbitMQ's own files on this machine: its message stores (classic queues) and quorum logs.
RABBITMQ_DATA = Path("/var/lib/rabbitmq/mnesia")


def broker_files_hold(needle: bytes) -> bool:
    """Whether any file of RabbitMQ's data directory holds `needle`."""
    for path in RABBITMQ_DATA.rglob("*"):
        try:
            if path.is_file() and needle in path.read_bytes():
                return True
        except OSError:  # a file the broker removed or renamed meanwhile
            continue
    return False


def test_no_plaintext_address_reaches_the_broker(write_csv, settings):
    from viswals.celery import app

    settings.INGEST_QUEUE = queue = f"{settings.INGEST_QUEUE}-unconsumed"  # nobody consumes it
    tag = secrets.token_hex(6)
    addresses = [f"user{i}.{tag}@example.com" for i in range(1, 121)]
    rows = "".join(
        f"{i},Ann{i},Lee,{address},1600000000000,-1,-1,-1\n"
        for i, address in enumerate(addresses, start=1)
    )
    # A reject carrying an address too (the producer finds it: the field count).
    path = write_csv(f"{HEADER}\n{rows}999,Short,short.{tag}@example.com\n")
    canary = f"canary.{tag}@example.org"
    try:
        result = publish_file(path=path, batch_size=50)
        with app.producer_or_acquire() as producer:
            # A persistent message in plaintext beside the batches, as large as one: once the
            # broker's files hold it, they hold the batches published before it too.
            producer.publish(
                canary * 400, exchange="", routing_key=queue, delivery_mode=2, serializer="json"
            )
        store_checked = RABBITMQ_DATA.is_dir()
        if store_checked:
            wait_until(
                lambda: broker_files_hold(canary.encode()), 30, "the canary never reached disk"
            )
            assert not any(broker_files_hold(a.encode()) for a in (*addresses, f"short.{tag}@"))
        bodies = queue_bodies(queue)
    finally:
        queue_delete(queue)

    batches = [body for body in bodies if canary.encode() not in body]
    assert len(batches) == result.batches == 3
    everything = b"".join(batches)
    assert tag.encode() not in everything  # no address, not even part of one
    # A worker's keyring gets them back, each on its row.
    stored = [row for body in batches for row in batch_from_message(orjson.loads(body)[0][2])[0]]
    assert [row[4] for row in stored] == addresses
    assert store_checked or pytest.skip("RabbitMQ's files are not on this machine")


def test_a_batch_the_workers_keyring_cannot_decrypt_is_kept_encrypted(celery_worker_process):
    run = IngestRun.objects.create(
        file_name="f.csv", file_size=1, checksum="0" * 64, batch_size=1,
        rows_published=1, batches_published=1,
    )  # fmt: skip
    row = [2, "40", "Ann", "Lee", "unknown.key@example.com", "1600000000000", "-1", "-1", "-1"]
    with override_settings(EMAIL_ENCRYPTION_KEYS=(("elsewhere", secrets.token_bytes(32)),)):
        message = batch_message([row], [])
    store_batch.apply_async(args=(run.id, 1, message), queue=settings.INGEST_QUEUE)

    batch = wait_until(
        lambda: IngestBatch.objects.filter(run=run, status="failed").first(), 30, "not failed"
    )
    assert batch.error.startswith("cannot decrypt the batch's addresses: no key 'elsewhere'")
    assert "unknown.key" not in json.dumps(batch.payload)
    assert batch.payload["emails"].startswith("v1.elsewhere.")
    assert not User.objects.filter(id=40).exists()


def test_a_dead_letter_keeps_the_addresses_encrypted_and_is_published_again():
    row = [2, "41", "Ann", "Lee", "dead.letter@example.com", "1600000000000", "-1", "-1", "-1"]
    payload = batch_payload([row], [[3, "expected 8 fields, found 2", "1,2"]])

    assert "dead.letter" not in json.dumps(payload)
    assert row[4] == "dead.letter@example.com"  # the caller's rows are left as they were
    assert batch_from_message(batch_payload_message(payload)) == (
        [row],
        [[3, "expected 8 fields, found 2", "1,2"]],
    )
    # Kept before addresses were encrypted (plain rows): encrypted when published again.
    old = {"rows": [row], "rejects": []}
    assert "dead.letter" not in batch_payload_message(old)


def test_messages_with_encrypted_addresses_stay_under_the_batch_bound(write_csv, settings):

    # A bound large enough that one byte a character more than counted would pass it.
    settings.INGEST_BATCH_MAX_BYTES = bound = ENVELOPE_BYTES + 1_000_000
    settings.INGEST_QUEUE = queue = f"{settings.INGEST_QUEUE}-bounded-emails"  # not consumed
    # Control characters in the address: the most bytes a character takes in the token (eight).
    rows = "".join(
        f"{i},F,L,{chr(1) * 5000}@example.com,1600000000000,-1,-1,-1\n" for i in range(1, 121)
    )
    path = write_csv(f"{HEADER}\n{rows}")
    try:
        result = publish_file(path=path, batch_size=10_000)
        bodies = queue_bodies(queue)
    finally:
        queue_delete(queue)

    assert result.batches == len(bodies) > 1
    assert max(len(body) for body in bodies) <= bound


def _database_files_hold(needles: list[bytes], *, since: float) -> list[str]:
    """The users table's files, and the WAL segments written since `since`, that hold any of
    `needles` (after a checkpoint, so the table's pages are on disk)."""
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")
        cursor.execute(
            "SELECT current_setting('data_directory'), pg_relation_filepath('users_user')"
        )
        data_directory, table_file = cursor.fetchone()
    data = Path(data_directory)
    files = list(data.glob(f"{table_file}*"))  # its segments and its free-space map
    files += [p for p in (data / "pg_wal").glob("0*") if p.stat().st_mtime >= since - 1]
    holding = []
    for path in files:
        content = path.read_bytes()
        if any(needle in content for needle in needles):
            holding.append(str(path))
    return holding


def test_the_database_and_its_dump_hold_no_address(celery_worker_process, write_csv):
    import subprocess
    import time

    from users.services import user_create, user_update

    started = time.time()
    tag = secrets.token_hex(6)
    addresses = [f"dump{i}.{tag}@example.com" for i in range(1, 41)]
    rows = "".join(
        f"{i},Dee{i},Moss,{address},1600000000000,-1,-1,-1\n"
        for i, address in enumerate(addresses, start=1)
    )
    call_command("publish_csv", write_csv(f"{HEADER}\n{rows}"), "--wait", "--timeout", "60")
    made = user_create(first_name="Api", last_name="Made", email_address=f"api.{tag}@example.com")
    user_update(user=made, fields={"email_address": f"edited.{tag}@example.com"})
    assert User.objects.get(id=1).email_address == addresses[0]
    assert User.objects.get(id=made.id).email_address == f"edited.{tag}@example.com"

    database = connection.settings_dict
    where = ["--host", database["HOST"] or "127.0.0.1", "--port", str(database["PORT"] or 5432)]
    dump = subprocess.run(
        ["pg_dump", *where, "--username", database["USER"], "--no-password", database["NAME"]],
        capture_output=True,
        check=True,
        env={"PGPASSWORD": database["PASSWORD"] or ""},
    ).stdout
    assert b"Dee1\tMoss" in dump  # the users are in it (names stay plaintext)
    assert tag.encode() not in dump  # and no address, not even part of one
    # Nor the table's files or the WAL written meanwhile (what a replica receives).
    assert _database_files_hold([tag.encode()], since=started) == []
