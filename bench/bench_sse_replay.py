"""SSE replay load: one anonymous client (public-read mode) reconnecting to GET /users/sse with an
old Last-Event-ID as fast as it can, while an API client reads GET /users/{id} with its token.

The history holds --batches `users.ingested` events of about 1 MB each, each with a user deleted
after it (so every replay has to take that user out). Reported: the replaying client's bytes/s,
connects and 429s, and the reader's p50/p99 latency, with and without the replaying client.
Everything runs in a scratch database, Redis prefix and channel, removed at the end.

Usage: python bench/bench_sse_replay.py [--seconds 10] [--batches 6] [--no-limit]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import threading
import time

import httpx
from scratch import Scratch, free_port, start_web_server

SCRATCH = Scratch(f"sser{os.getpid()}", API_READS_REQUIRE_AUTH="false")

# Run in `manage.py shell`: a user to read, then the big history, then print the ids needed.
FILL = """
import json
from django.conf import settings
from users.services import user_create, user_delete
from users.stream.encoding import event_id_text
from users.stream.history import RedisStreamStorage
storage = RedisStreamStorage()
channel = settings.STREAM_CHANNEL
reader = user_create(first_name="Read", last_name="Me", email_address="read@example.com")
epoch, start = storage.get_position(channel)
for batch in range({batches}):
    gone = user_create(first_name="Gone", last_name=str(batch), email_address="g@example.com")
    users = [{{"id": gone.id, "email_address": "g@example.com"}}] + [
        {{"id": 10**9 + batch * 10**4 + n, "email_address": "u%d@example.com" % n, "pad": "x" * 80}}
        for n in range(8000)
    ]
    data = json.dumps({{"run": 1, "batch": batch, "count": len(users), "users": users}},
                      separators=(",", ":"))
    storage.append_event(channel, "users.ingested", data)
    user_delete(user_id=gone.id)
print(reader.id, event_id_text(channel, epoch, start))
"""


def api_token(role: str) -> str:
    out = SCRATCH.manage(
        "create_api_client", f"bench-{role}", "--role", role, capture_output=True, text=True
    ).stdout
    return out.strip().splitlines()[-1]


def replay_loop(
    base: str, last_event_id: str, batches: int, stop: threading.Event, totals: dict
) -> None:
    """Resume from `last_event_id`, read what the server sends for a moment, go again."""
    headers = {"Accept": "text/event-stream", "Last-Event-ID": last_event_id}
    with httpx.Client(timeout=httpx.Timeout(5, read=2)) as client:
        while not stop.is_set():
            try:
                with client.stream("GET", f"{base}/users/sse", headers=headers) as response:
                    totals["connects"] += 1
                    if response.status_code != 200:
                        totals[str(response.status_code)] = (
                            totals.get(str(response.status_code), 0) + 1
                        )
                        response.read()
                        continue
                    deletes, tail = 0, b""
                    for chunk in response.iter_raw():
                        totals["bytes"] += len(chunk)
                        deletes += (tail + chunk).count(b"event: user.deleted")
                        tail = chunk[-30:]
                        if deletes >= batches or stop.is_set():
                            break  # the newest delete: the replay is over
            except httpx.HTTPError:
                totals["errors"] += 1


def reads_for(base: str, user_id: int, token: str, seconds: float) -> list[float]:
    took = []
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(timeout=10) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = client.get(f"{base}/users/{user_id}", headers=headers)
            took.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
            time.sleep(0.01)
    return took


def p(values: list[float], q: float) -> float:
    return sorted(values)[max(int(len(values) * q) - 1, 0)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batches", type=int, default=6)  # ~7 MB: within one replay
    parser.add_argument(
        "--no-limit", action="store_true", help="no anonymous rate limit: replays as fast as served"
    )
    args = parser.parse_args()
    if args.no_limit:
        SCRATCH.env["API_ANON_THROTTLE_RATE"] = ""
    SCRATCH.create()
    server = None
    try:
        out = SCRATCH.manage(
            "shell", "-c", FILL.format(batches=args.batches), capture_output=True, text=True
        ).stdout.split()
        user_id, last_event_id = int(out[-2]), out[-1]
        token = api_token("reader")
        port = free_port()
        server = start_web_server(port, SCRATCH.env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        reads_for(base, user_id, token, 1)  # warm both workers
        quiet = reads_for(base, user_id, token, args.seconds / 2)

        stop = threading.Event()
        totals = {"connects": 0, "bytes": 0, "errors": 0}
        abuser = threading.Thread(
            target=replay_loop, args=(base, last_event_id, args.batches, stop, totals)
        )
        started = time.monotonic()
        abuser.start()
        loaded = reads_for(base, user_id, token, args.seconds)
        stop.set()
        abuser.join()
        elapsed = time.monotonic() - started
        refused = {k: v for k, v in totals.items() if k.isdigit()}
        print(
            f"replaying client: {totals['bytes'] / elapsed / 2**20:.1f} MB/s over {elapsed:.1f}s, "
            f"{totals['connects']} connects, refused {refused or 'none'}, "
            f"errors {totals['errors']}"
        )
        print(
            f"GET /users/{{id}} (token): quiet p50 {statistics.median(quiet) * 1000:.1f} ms, "
            f"p99 {p(quiet, 0.99):.1f} ms; during replays p50 "
            f"{statistics.median(loaded) * 1000:.1f} ms, p99 {p(loaded, 0.99):.1f} ms "
            f"({len(loaded)} reads)"
        )
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        SCRATCH.cleanup()


if __name__ == "__main__":
    main()
