"""Stalled stream clients: --clients sockets resume GET /users/sse from before --events
`users.ingested` events of 1 MB each and never read (a 4 KiB receive window too), while an API
client reads GET /users/{id} with its token.

Reported, against a baseline measured in the same run before any socket stalls: the web server's
RSS (all its processes) and its growth per stalled socket, the read's median latency as a ratio
of the quiet one, and how long the sockets took to be dropped after SSE_SEND_TIMEOUT. Exits 1 if
the growth passes 4 MB per socket or the read slows past 3x (at least +200 ms): before the
stalled-client wrapper, each such replay held ~100 events' text at once (60 sockets: +4.7 GB).
Everything runs in a scratch database, Redis prefix and channel, removed at the end.

Usage: python bench/bench_stalled_streams.py [--clients 60] [--events 30] [--send-timeout 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

import httpx
import psutil
from scratch import ROOT, Scratch, free_port, start_web_server

sys.path.insert(0, str(ROOT))
from tests.support.sse import bytes_until_closed, stalled_stream  # noqa: E402

SCRATCH = Scratch(f"stall{os.getpid()}", API_USER_THROTTLE_RATE="")

# Run in `manage.py shell`: a reader's token, a user to read, the big history; print the ids.
FILL = """
from django.conf import settings
from users.services import api_client_create, user_create
from users.stream.encoding import event_id_text
from users.stream.history import RedisStreamStorage
storage = RedisStreamStorage()
channel = settings.STREAM_CHANNEL
token = api_client_create(name="bench-stalled", role="reader", expires_days=1)[1]
user = user_create(first_name="Fast", last_name="Read", email_address="fast@example.com")
epoch, start = storage.get_position(channel)
pad = "x" * 1_000_000
for number in range({events}):
    data = '{{"run":9,"batch":%d,"pad":"%s"}}' % (number, pad)
    storage.append_event(channel, "users.ingested", data)
print(token, user.id, event_id_text(channel, epoch, start))
"""


def server_rss_mb(server: subprocess.Popen) -> float:
    parent = psutil.Process(server.pid)
    return sum(p.memory_info().rss for p in (parent, *parent.children(recursive=True))) / 2**20


def reads_for(server, base: str, user_id: int, token: str, seconds: float):
    """GET /users/{id} for a while: (median seconds, peak server RSS in MB)."""
    took, peak = [], 0.0
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(timeout=10) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            peak = max(peak, server_rss_mb(server))
            started = time.perf_counter()
            response = client.get(f"{base}/users/{user_id}", headers=headers)
            took.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
            time.sleep(0.05)  # paced: a steady reader, not a load of its own
    return statistics.median(took), peak


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--events", type=int, default=30, help="1 MB events each socket resumes")
    parser.add_argument("--send-timeout", type=int, default=3, help="SSE_SEND_TIMEOUT, seconds")
    args = parser.parse_args()
    SCRATCH.env.update(
        SSE_SEND_TIMEOUT=str(args.send_timeout),
        SSE_MAX_STREAMS_PER_CLIENT=str(args.clients + 10),
        SSE_REPLAY_MAX_EVENTS="100000",  # not what bounds memory here
        SSE_REPLAY_MAX_BYTES=str(2**30),
    )
    SCRATCH.create()
    server, sockets = None, []
    try:
        out = SCRATCH.manage(
            "shell", "-c", FILL.format(events=args.events), capture_output=True, text=True
        ).stdout.split()
        token, user_id, start = out[-3], int(out[-2]), out[-1]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_web_server(port, SCRATCH.env)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        reads_for(server, base, user_id, token, 1)  # both workers up and warm
        quiet, rss_before = reads_for(server, base, user_id, token, 1.5)
        sockets = [stalled_stream(port, token, start) for _ in range(args.clients)]
        stalled, peak = reads_for(server, base, user_id, token, args.send_timeout)
        grown = peak - rss_before

        dropped_from = time.monotonic()
        time.sleep(args.send_timeout + 1)  # reading now would unblock them
        closed = sum(bytes_until_closed(s, 16 * 2**20, 15) is not None for s in sockets)
        dropped_in = time.monotonic() - dropped_from

        print(
            f"server RSS {rss_before:.0f} -> peak {peak:.0f} MB with {args.clients} stalled "
            f"replays of {args.events} MB: +{grown:.0f} MB, {grown / args.clients:.2f} MB per "
            f"socket ({grown / rss_before:.2f}x the baseline RSS)"
        )
        print(
            f"GET /users/{{id}} median: quiet {quiet * 1000:.1f} ms, with stalled sockets "
            f"{stalled * 1000:.1f} ms ({stalled / quiet:.2f}x)"
        )
        print(
            f"{closed}/{args.clients} sockets closed by the server within {dropped_in:.1f} s "
            f"of the stall's end (SSE_SEND_TIMEOUT {args.send_timeout} s)"
        )
        failed = []
        if grown >= args.clients * 4:
            failed.append(f"RSS grew {grown:.0f} MB (bound: 4 MB per socket)")
        if stalled >= max(3 * quiet, quiet + 0.2):
            failed.append("reads slowed past 3x (and +200 ms)")
        if closed < args.clients:
            failed.append(f"{args.clients - closed} stalled sockets were not closed")
        for line in failed:
            print(f"OVER BOUND: {line}")
        return 1 if failed else 0
    finally:
        for sock in sockets:
            sock.close()
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        SCRATCH.cleanup()


if __name__ == "__main__":
    sys.exit(main())
