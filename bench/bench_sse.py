"""SSE benchmark: GET /users/sse served by the Procfile's uvicorn (2 workers), loopback only.

  (a) 500 concurrent open streams: errors, one event fanned out to all of them, and the memory
      per open stream (RSS of the server processes before and after opening them);
  (b) latency from a POST /users 201 to the `user.created` event at each of 100 connected
      clients (p50 / p99 over every client and event; target p99 <= 200 ms);
  (c) ingest of a 500,000-row file (`publish_csv --wait`, one Celery worker -c 2) with no clients
      and with 10 clients connected, alternating: every client must receive every batch event,
      and the throughput drop must stay <= 10%.

Everything runs in a scratch database, Redis prefix, SSE channel and queue, removed at the end.
The load client runs in this process and shares the machine's cores with the server.

Usage: python bench/bench_sse.py [--rows 500000] [--streams 500] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from scratch import PY, ROOT, Scratch, free_port, generate_users, start_web_server

# One account opens every stream here: lift the per-client stream limit.
SCRATCH = Scratch(
    f"sseb{os.getpid()}", API_ANON_THROTTLE_RATE="", SSE_MAX_STREAMS_PER_CLIENT="2000"
)
DB, ENV, TAG = SCRATCH.db, SCRATCH.env, SCRATCH.tag
CHANNEL = ENV["STREAM_CHANNEL"]
psql, manage = SCRATCH.psql, SCRATCH.manage


# --- A light SSE client (asyncio streams: 500 of them must not eat the server's CPU) -----------

# Streams authenticate with a reader's token (main() sets it): reads need users.view_user.
STREAM_AUTH = b""
EVENT_RE = re.compile(rb"event: ([\w.-]+)\nid: [^\n]*:(\d+)\ndata: ([^\n]{0,80})")


class Stream:
    """One open GET /users/sse; records (type, id, data prefix, arrival time) of each event."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[tuple[str, int, bytes, float]] = []
        self.opened = asyncio.Event()
        self.error: str | None = None
        self.task: asyncio.Task | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        try:
            reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
            self._writer.write(
                b"GET /users/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                + STREAM_AUTH
                + b"\r\n"
            )
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(status.decode(errors="replace").strip())
            while (await reader.readline()) not in (b"\r\n", b""):
                pass  # headers
            seen: set[int] = set()
            while True:  # chunked transfer encoding; the server writes whole events per chunk
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    return
                chunk = await reader.readexactly(size + 2)
                now = time.perf_counter()
                if not self.opened.is_set() and b"stream-open" in chunk:
                    self.opened.set()
                position = chunk.find(b"event: ")
                while position >= 0:  # hop from event to event, never scanning the data
                    match = EVENT_RE.match(chunk, position)
                    if match and int(match[2]) not in seen:
                        seen.add(int(match[2]))
                        self.events.append((match[1].decode(), int(match[2]), match[3], now))
                    position = chunk.find(b"\n\nevent: ", position)
                    if position >= 0:
                        position += 2
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # counted as an error
            self.error = f"{type(exc).__name__}: {exc}"
            self.opened.set()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.task is not None:
            self.task.cancel()


async def open_streams(port: int, count: int) -> list[Stream]:
    streams = []
    for start in range(0, count, 50):  # a burst of connects, 50 at a time
        batch = [Stream(port) for _ in range(min(50, count - start))]
        for stream in batch:
            stream.task = asyncio.create_task(stream.run())
        await asyncio.wait_for(asyncio.gather(*(s.opened.wait() for s in batch)), 30)
        streams += batch
    return streams


def close_streams(streams: list[Stream]) -> None:
    for stream in streams:
        stream.close()


async def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# --- Server and worker ----------------------------------------------------------------------


def start_server(port: int) -> subprocess.Popen:
    process = start_web_server(port, ENV)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.2)


def server_rss_mb(process: subprocess.Popen) -> tuple[float, int]:
    parent = psutil.Process(process.pid)
    procs = [parent, *parent.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs) / 2**20, sum(p.num_threads() for p in procs)


# --- (a) open streams ------------------------------------------------------------------------


async def bench_open_streams(port: int, server: subprocess.Popen, count: int) -> dict:
    warm = await open_streams(port, 4)  # both workers' listeners and thread pools up
    await asyncio.sleep(1)
    rss_before, threads_before = server_rss_mb(server)
    started = time.perf_counter()
    streams = await open_streams(port, count)
    open_seconds = time.perf_counter() - started
    await asyncio.sleep(2)
    rss_after, threads_after = server_rss_mb(server)
    errors = [s.error for s in streams if s.error]
    sent = time.perf_counter()
    await asyncio.to_thread(send_marker_event)
    everyone = await wait_for(lambda: all(s.events for s in streams), 30)
    fanout = max(s.events[0][3] for s in streams if s.events) - sent
    errors += [s.error for s in streams if s.error and s.error not in errors]
    close_streams(streams + warm)
    return {
        "streams": count,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "open_seconds": open_seconds,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "per_stream_kb": (rss_after - rss_before) * 1024 / count,
        "threads_before": threads_before,
        "threads_after": threads_after,
        "all_received": everyone,
        "fanout_ms": fanout * 1000,
    }


def send_marker_event() -> None:
    subprocess.run(
        [PY, "-c", "import django; django.setup(); from users.events import user_deleted; "
         "user_deleted(1)"],
        cwd=ROOT,
        env={**ENV, "DJANGO_SETTINGS_MODULE": "viswals.settings"},
        check=True,
    )  # fmt: skip


# --- (b) POST-to-event latency ---------------------------------------------------------------


async def bench_latency(port: int, token: str, clients: int, posts: int) -> dict:
    streams = await open_streams(port, clients)
    await asyncio.sleep(1)
    sent: dict[int, tuple[float, float]] = {}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Token {token}"}
    ) as client:
        for number in range(posts):
            posted = time.perf_counter()
            response = await client.post(
                "/users",
                json={
                    "first_name": f"Lat{number}",
                    "last_name": "Ency",
                    "email_address": f"lat{number}@example.com",
                },
            )
            got_201 = time.perf_counter()
            if response.status_code != 201:
                raise RuntimeError(f"POST /users: {response.status_code} {response.text[:200]}")
            sent[response.json()["id"]] = (posted, got_201)
            await asyncio.sleep(0.05)
    await wait_for(
        lambda: all(sum(e[0] == "user.created" for e in s.events) >= posts for s in streams), 30
    )
    latencies, from_post = [], []
    missing = 0
    id_re = re.compile(rb'"id": ?(\d+)')
    for stream in streams:
        got = {int(id_re.search(e[2])[1]): e[3] for e in stream.events if e[0] == "user.created"}
        for user_id, (t_post, t_201) in sent.items():
            if user_id in got:
                # The event is sent on commit, before the response: it often arrives first.
                latencies.append(max(0.0, got[user_id] - t_201) * 1000)
                from_post.append((got[user_id] - t_post) * 1000)
            else:
                missing += 1
    close_streams(streams)
    latencies.sort()
    from_post.sort()
    return {
        "clients": clients,
        "posts": posts,
        "missing": missing,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "max": latencies[-1],
        "post_p50": statistics.median(from_post),
        "post_p99": from_post[int(len(from_post) * 0.99) - 1],
    }


def api_token(role: str) -> str:
    """A new API client's token in `role`: the last line `create_api_client` prints."""
    out = SCRATCH.manage(
        "create_api_client", f"bench-{role}", "--role", role,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return out.strip().splitlines()[-1]


# --- (c) ingest with clients -----------------------------------------------------------------


def cpu_seconds(process: subprocess.Popen) -> float:
    parent = psutil.Process(process.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [parent, *parent.children(recursive=True)])


async def ingest_once(path: Path, port: int, server: subprocess.Popen, clients: int) -> dict:
    psql("TRUNCATE users_user, ingest_ingestrun CASCADE")
    streams = await open_streams(port, clients) if clients else []
    await asyncio.sleep(0.5)
    server_cpu, client_cpu = cpu_seconds(server), time.process_time()
    seconds = await asyncio.to_thread(SCRATCH.publish_and_wait, path)
    run_id = int(psql("SELECT max(id) FROM ingest_ingestrun"))
    batches = int(psql(f"SELECT count(*) FROM ingest_ingestbatch WHERE run_id = {run_id}"))
    rows = int(psql(f"SELECT rows_published FROM ingest_ingestrun WHERE id = {run_id}"))
    result = {"clients": clients, "rows_per_s": rows / seconds, "batches": batches}
    if streams:
        marker = f'{{"run":{run_id},'.encode()

        def received(stream: Stream) -> int:
            return sum(e[0] == "users.ingested" and e[2].startswith(marker) for e in stream.events)

        await wait_for(lambda: all(received(s) >= batches for s in streams), 60)
        result["received"] = [received(s) for s in streams]
        result["server_cpu"] = cpu_seconds(server) - server_cpu
        result["client_cpu"] = time.process_time() - client_cpu
        result["errors"] = sum(bool(s.error) for s in streams)
        close_streams(streams)
    return result


def history_mb() -> float:
    key = f"{TAG}:sse:log:{CHANNEL}"
    out = subprocess.run(
        ["redis-cli", "MEMORY", "USAGE", key, "SAMPLES", "0"], capture_output=True, text=True
    ).stdout.strip()
    return int(out or 0) / 2**20


# --- main -----------------------------------------------------------------------------------


async def run(args, port: int, server: subprocess.Popen, token: str, path: Path) -> None:
    a = await bench_open_streams(port, server, args.streams)
    print(
        f"(a) {a['streams']} open streams: {a['errors']} errors {a['first_error']}; "
        f"opened in {a['open_seconds']:.1f}s; one event reached all: {a['all_received']} "
        f"(last arrival {a['fanout_ms']:.0f} ms after send, incl. a Django process start)",
        flush=True,
    )
    print(
        f"    server RSS {a['rss_before']:.0f} -> {a['rss_after']:.0f} MB: "
        f"{a['per_stream_kb']:.0f} KB per open stream; threads "
        f"{a['threads_before']} -> {a['threads_after']}",
        flush=True,
    )
    b = await bench_latency(port, token, args.clients, args.posts)
    print(
        f"(b) POST 201 -> user.created at {b['clients']} clients, {b['posts']} posts: "
        f"p50 {b['p50']:.1f} ms, p99 {b['p99']:.1f} ms, max {b['max']:.1f} ms, "
        f"missing {b['missing']}  (target p99 <= 200 ms)",
        flush=True,
    )
    print(
        f"    from sending the POST (includes the request itself): p50 {b['post_p50']:.1f} ms, "
        f"p99 {b['post_p99']:.1f} ms",
        flush=True,
    )
    worker = SCRATCH.start_worker()
    try:
        plain, loaded = [], []
        for _ in range(args.rounds):
            plain.append(await ingest_once(path, port, server, 0))
            loaded.append(await ingest_once(path, port, server, 10))
            print(
                f"    ingest: {plain[-1]['rows_per_s']:,.0f} rows/s without clients, "
                f"{loaded[-1]['rows_per_s']:,.0f} with 10; batches {loaded[-1]['batches']}, "
                f"received per client {sorted(set(loaded[-1]['received']))}, "
                f"stream errors {loaded[-1]['errors']}; CPU spent streaming: web server "
                f"{loaded[-1]['server_cpu']:.1f}s, load client {loaded[-1]['client_cpu']:.1f}s",
                flush=True,
            )
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    complete = all(min(r["received"]) >= r["batches"] for r in loaded)
    for label, pick in (("median", statistics.median), ("best", max)):
        base = pick(r["rows_per_s"] for r in plain)
        with_clients = pick(r["rows_per_s"] for r in loaded)
        print(
            f"(c) ingest {args.rows:,} rows, {label} of {args.rounds}: {base:,.0f} rows/s without "
            f"clients, {with_clients:,.0f} with 10 (drop {(1 - with_clients / base) * 100:.1f}%, "
            f"target <= 10%)",
            flush=True,
        )
    print(f"    every client got every batch event: {complete}", flush=True)
    print(f"    event history in Redis after the runs: {history_mb():.0f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--posts", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    path = Path(args.data_dir) / f"users-{args.rows}.csv"
    generate_users(args.rows, path)

    SCRATCH.create()
    server = None
    try:
        global STREAM_AUTH
        STREAM_AUTH = f"Authorization: Token {api_token('reader')}\r\n".encode()
        token = api_token("writer")
        port = free_port()
        server = start_server(port)
        asyncio.run(run(args, port, server, token, path))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        SCRATCH.cleanup()


if __name__ == "__main__":
    main()
