"""The client host of the test across hosts (test_across_hosts.py), run there with
`ip netns exec`: `python -m tests.cluster.across_hosts_client CONFIG.json`.

It publishes the file (publish_csv --wait, through the three RabbitMQ nodes), and meanwhile
keeps readers listing and getting users on both web hosts, follows the stream on the first,
and notes the table's row count every quarter second (the test reads it from PROGRESS to time
its faults). Once the test writes STOP and the publish has ended: a writer creates a user on
one web host and reads it from the other; the table is compared with the file; reads of both
hosts are compared with PostgreSQL. Everything it saw goes to RESULTS (JSON)."""

from __future__ import annotations

import functools
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg

from tests.cluster.sse import FollowingStream


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    webs: list[str] = config["webs"]
    reader = {"Authorization": f"Token {config['reader']}", "Accept": "application/json"}
    writer = {"Authorization": f"Token {config['writer']}", "Accept": "application/json"}
    stop = threading.Event()
    started = time.monotonic()
    results: dict = {"reads": {}, "progress": []}

    stream = FollowingStream(f"{webs[0]}/users/sse", reader, retry=0.2)
    stream.wait_for(lambda e: e.type == "stream-open", timeout=30)

    publisher = subprocess.Popen(
        [sys.executable, "manage.py", "publish_csv", config["file"], "--wait", "--timeout", "600",
         "--batch-size", str(config["batch_size"])],
        env=config["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def progress() -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(config["database"], connect_timeout=2) as connection:
                    while not stop.is_set():
                        rows = connection.execute(
                            "SELECT count(*) FROM users_user WHERE source_run_id IS NOT NULL"
                        ).fetchone()[0]
                        results["progress"].append((time.monotonic(), rows))
                        Path(config["progress"]).write_text(str(rows))
                        time.sleep(0.25)
            except psycopg.Error:
                time.sleep(0.25)

    def read_loop(base: str) -> None:
        log = results["reads"][base] = []
        with httpx.Client(base_url=base, headers=reader, timeout=5) as http:
            while not stop.is_set():
                for what, path in (
                    ("list", "/users?page_size=20"),
                    ("get", f"/users/{random.randint(1, config['max_id'])}"),
                ):
                    at = time.monotonic()
                    try:
                        status = http.get(path).status_code
                    except httpx.HTTPError as error:
                        status = type(error).__name__
                    log.append((at, what, status))
                time.sleep(0.05)

    threads = [threading.Thread(target=progress, daemon=True)]
    threads += [threading.Thread(target=read_loop, args=(base,), daemon=True) for base in webs]
    for thread in threads:
        thread.start()

    output, _ = publisher.communicate(timeout=900)
    results["publish"] = {"returncode": publisher.returncode, "output": output[-3000:]}
    results["published_at"] = time.monotonic()
    while not Path(config["stop"]).exists():
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)

    results["read_your_write"] = read_your_write(webs, writer)
    # The stream's events up to now, after the last batch's event has had time to arrive.
    time.sleep(2)
    stream.close()
    events = []
    while not stream.events.empty():
        event = stream.events.get()
        events.append((event.at, event.type, event.id))
    results["stream"] = {"events": events, "drops": stream.drops}
    with psycopg.connect(config["database"]) as connection:
        results["table_matches_file"] = table_matches_file(connection, config["file"])
        results["reads_agree"] = reads_agree(connection, webs, reader)
    results["elapsed"] = time.monotonic() - started
    Path(config["results"]).write_text(json.dumps(results))


def read_your_write(webs: list[str], writer: dict) -> dict:
    """Create a user through the first web host and read it at once through the second."""
    name = f"Ryw{random.randint(10**6, 10**7)}"
    body = {"first_name": name, "last_name": "Across", "email_address": "ryw@example.com"}
    with httpx.Client(headers=writer, timeout=10) as http:
        created = http.post(f"{webs[0]}/users", json=body)
        if created.status_code != 201:
            return {"ok": False, "why": f"create: {created.status_code} {created.text[:200]}"}
        user_id = created.json()["id"]
        got = http.get(f"{webs[1]}/users/{user_id}")
        listed = http.get(f"{webs[1]}/users", params={"first_name": name})
    ids = [user["id"] for user in listed.json().get("results", [])] if listed.is_success else []
    return {"ok": got.status_code == 200 and ids == [user_id], "get": got.status_code, "list": ids}


def table_matches_file(connection, path: str) -> dict:
    """The table against the file's valid rows, a later line winning (users.validation's rules)."""
    from ingest.parsing import read_records
    from users.validation import RowRejected, parse_row

    expected = {}
    with open(path, "rb") as stream:
        for record in read_records(stream):
            if record.fields is None:
                continue
            try:
                row = parse_row(record.fields)
            except RowRejected:
                continue
            expected[row.id] = row
    columns = "id, first_name, last_name, email_address, created_at, deleted_at, merged_at, "
    rows = connection.execute(
        f"SELECT {columns} parent_user_id FROM users_user WHERE source_run_id IS NOT NULL"
    ).fetchall()
    actual = {row[0]: (*row[:3], _address(row[3]), *row[4:]) for row in rows}
    differing = [user_id for user_id, row in expected.items() if actual.get(user_id) != tuple(row)]
    return {
        "expected": len(expected),
        "actual": len(actual),
        "missing_or_different": len(differing),
        "extra": len(set(actual) - set(expected)),
        "sample": differing[:5],
    }


def reads_agree(connection, webs: list[str], reader: dict) -> dict:
    """200 users read through each web host, against PostgreSQL."""
    ids = [row[0] for row in connection.execute(
        "SELECT id FROM users_user WHERE source_run_id IS NOT NULL ORDER BY random() LIMIT 200"
    )]  # fmt: skip
    rows = {
        row[0]: (row[1], row[2], _address(row[3]))
        for row in connection.execute(
            "SELECT id, first_name, last_name, email_address FROM users_user WHERE id = ANY(%s)",
            [ids],
        )
    }
    disagree = []
    with httpx.Client(headers=reader, timeout=10) as http:
        for base in webs:
            for user_id in ids:
                response = http.get(f"{base}/users/{user_id}")
                body = response.json() if response.status_code == 200 else {}
                seen = (body.get("first_name"), body.get("last_name"), body.get("email_address"))
                if seen != rows[user_id]:
                    disagree.append((base, user_id, response.status_code))
    return {"checked": len(ids) * len(webs), "disagree": disagree[:10], "count": len(disagree)}


def _address(stored: str) -> str:
    """An address as the users table stores it (encrypted, users.email_index), decrypted with
    the keys of this host's environment (the web hosts' own)."""
    from users.crypto import email_decrypt, is_token

    _django_ready()
    return email_decrypt(stored) if is_token(stored) else stored


@functools.cache
def _django_ready() -> None:
    """Settings loaded once (django.setup() configures logging again on every call)."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "viswals.settings")
    django.setup()


if __name__ == "__main__":
    main(sys.argv[1])
