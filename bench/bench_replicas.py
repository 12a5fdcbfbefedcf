"""Read replicas on one machine: what routing costs a read, and how far a replica falls behind
under a 500,000-row import.

  1. Starts a PostgreSQL primary and a streaming replica of its own (initdb, pg_basebackup -R;
     under /tmp, free loopback ports, removed at the end: tests/cluster/postgres.py), migrates it.
  2. Imports 500k generated rows (publish_csv --wait, a Celery worker of its own on its own
     queue of the local RabbitMQ) while sampling, every 0.1 s, the replica's lag: 0 when it has
     replayed everything the primary wrote, else the age of its last replayed transaction (the
     rule viswals.db_router uses), and the bytes of WAL it has yet to replay. Prints peak and p95.
  3. Starts two web servers (the Procfile's command, one worker each) on that database: one with
     the replica (DATABASE_REPLICA_URLS: list reads routed to it, read-your-writes on), one
     without. Sends the same list requests as a reader to both, interleaved request by
     request, and prints each one's median and p95 and the ratio routed/unrouted. A third
     server reads the standby directly, without the router: routed/standby is what the
     routing itself costs.
     A writer's reads (its position noted in Redis, the replica checked against it) are timed
     the same way.

Usage: .venv/bin/python bench/bench_replicas.py [--rows 500000] [--requests 2000]
Redis keys (own prefix) and the queue are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402

from tests.cluster.postgres import PostgresPair, postgres_bin  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

PY = sys.executable
TAG = f"bench-replicas-{os.getpid()}"
ENV = {
    **os.environ,
    "DJANGO_DEBUG": "true",
    "USERS_CACHE_PREFIX": f"{TAG}:users",
    "STREAM_KEY_PREFIX": f"{TAG}:sse",
    "STREAM_CHANNEL": f"{TAG}-users",
    "INGEST_QUEUE": TAG,
    "API_USER_THROTTLE_RATE": "1000000000/minute",
    "LOG_LEVEL": "WARNING",
    "HOST": "127.0.0.1",
    "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}
LAG_SQL = """
SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
"""


def sample_lag(pair: PostgresPair, stop: threading.Event, out: list) -> None:
    with pair.primary() as primary, pair.replica() as replica:
        while not stop.is_set():
            written = primary.execute(
                "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
            ).fetchone()[0]
            replayed, age = replica.execute(LAG_SQL).fetchone()
            behind = max(written - (replayed or 0), 0)
            out.append((0.0 if behind == 0 else max(age or 0.0, 0.0), behind))
            time.sleep(0.1)


def import_rows(pair: PostgresPair, env: dict, rows: int, tmp: Path) -> list:
    csv_path = tmp / "users.csv"
    subprocess.run([PY, "data/generate_users.py", "--rows", str(rows), "--seed", "5",
                    "--output", str(csv_path)], cwd=ROOT, check=True, timeout=900)  # fmt: skip
    worker = subprocess.Popen(
        [PY, "-m", "celery", "-A", "viswals", "worker", "-Q", TAG, "-c", "2", "--loglevel",
         "WARNING", "-n", f"{TAG}@%h"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    samples: list = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_lag, args=(pair, stop, samples), daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        subprocess.run([PY, "manage.py", "publish_csv", str(csv_path), "--wait", "--timeout",
                        "1200"], cwd=ROOT, env=env, check=True, timeout=1300)  # fmt: skip
    finally:
        stop.set()
        sampler.join(timeout=5)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    print(f"imported {rows:,} rows in {time.monotonic() - started:.1f}s")
    return samples


def tokens(env: dict) -> tuple[str, str]:
    code = (
        "from users.services import api_client_create as make; "
        f"print(make(name='{TAG}-reader', role='reader', expires_days=1)[1]); "
        f"print(make(name='{TAG}-writer', role='writer', expires_days=1)[1])"
    )
    result = subprocess.run([PY, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                            check=True, capture_output=True, text=True)  # fmt: skip
    reader, writer = result.stdout.split()[-2:]
    return reader, writer


def web(env: dict, tmp: Path, name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    metrics = tmp / f"metrics-{name}"
    metrics.mkdir()
    process = subprocess.Popen(
        ["sh", "scripts/web.sh"], cwd=ROOT, start_new_session=True,
        env={**env, "PORT": str(port), "WEB_CONCURRENCY": "1",
             "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"web server {name} did not start")


def timed(client: httpx.Client, path: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(path)
        out.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return out


def compare(bases: dict[str, str], token: str, requests: int, path: str, label: str) -> None:
    times: dict[str, list[float]] = {name: [] for name in bases}
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    clients = {name: httpx.Client(base_url=base, headers=headers, timeout=10)
               for name, base in bases.items()}  # fmt: skip
    for client in clients.values():
        timed(client, path, 50)  # warm-up: pools, plans, token cache
    # Request by request, each server first in turn: a change in the machine's load (shared with
    # other work) falls on every server alike, not on whichever one's round it hit.
    names = list(clients)
    for number in range(requests):
        turn = number % len(names)
        for name in names[turn:] + names[:turn]:
            times[name] += timed(clients[name], path, 1)
    for client in clients.values():
        client.close()
    medians = {}
    for name, values in times.items():
        values.sort()
        medians[name] = statistics.median(values)
        p95 = values[int(len(values) * 0.95)]
        print(f"  {label} {name:>8}: median {medians[name] * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms")
    print(f"  {label} routed/unrouted median: {medians['routed'] / medians['unrouted']:.3f}")
    if "standby" in medians:
        # The same standby read without the router: what the routing itself costs, apart from
        # the standby being another server than the primary.
        print(f"  {label} routed/standby median: {medians['routed'] / medians['standby']:.3f}; "
              f"standby/unrouted: {medians['standby'] / medians['unrouted']:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    if postgres_bin() is None:
        raise SystemExit("initdb not found: no replica pair")
    pair = PostgresPair(postgres_bin())
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            pair.start()
            env = {**ENV, "DATABASE_URL": pair.primary_url, "DATABASE_REPLICA_URLS": ""}
            subprocess.run([PY, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                           check=True, capture_output=True)  # fmt: skip
            samples = import_rows(pair, env, args.rows, tmp)
            seconds = sorted(lag for lag, _ in samples)
            behind = sorted(size for _, size in samples)
            print(f"replica lag under the import ({len(samples)} samples, every 0.1 s): "
                  f"peak {seconds[-1]:.2f}s, p95 {seconds[int(len(seconds) * 0.95)]:.2f}s; "
                  f"WAL not yet replayed: peak {behind[-1] / 2**20:.1f} MiB, "
                  f"p95 {behind[int(len(behind) * 0.95)] / 2**20:.1f} MiB")  # fmt: skip

            reader, writer = tokens(env)
            routed, routed_base = web({**env, "DATABASE_REPLICA_URLS": pair.replica_url}, tmp,
                                      "routed")  # fmt: skip
            processes.append(routed)
            unrouted, unrouted_base = web(env, tmp, "unrouted")
            processes.append(unrouted)
            # The standby as the only database (no router): reads there are plain reads.
            standby, standby_base = web({**env, "DATABASE_URL": pair.replica_url}, tmp, "standby")
            processes.append(standby)
            bases = {"routed": routed_base, "unrouted": unrouted_base, "standby": standby_base}
            print(f"routing cost of a read ({args.requests} requests per server, sequential):")
            compare(bases, reader, args.requests, "/users?page_size=20", "list")
            compare(bases, reader, args.requests, "/users?last_name=Smith&page_size=20", "filter")
            # A writer: its write position is looked up in Redis on every list read.
            with httpx.Client(headers={"Authorization": f"Token {writer}"}) as http:
                for base in (routed_base, unrouted_base):  # the standby takes no writes
                    body = {"first_name": "Bench", "last_name": "W", "email_address": "w@x.io"}
                    http.post(f"{base}/users", json=body)
            compare(bases, writer, args.requests, "/users?page_size=20", "writer")
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            pair.stop()
            client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
            keys = list(client.scan_iter(f"{TAG}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
            subprocess.run([PY, "-c", "from viswals.celery import app\n"
                            "with app.connection_for_write() as c:\n"
                            f"    c.default_channel.queue_delete('{TAG}')"],
                           cwd=ROOT, env=ENV, capture_output=True)  # fmt: skip


if __name__ == "__main__":
    main()
