"""HTTP read benchmark: authenticated GET /users/{id} (a reader's API token) on a warm cache
against a bare ASGI + Redis app, and the latency of list/filter requests, on 500,000 users.

  1. Loads 500k users into the configured database if it holds fewer (data/generate_users.py,
     then `publish_csv --wait` with a Celery worker this script starts and stops).
  2. Warms the Redis cache with every user (the layout of users/cache.py).
  3. Starts bench/bare_asgi_redis.py and the Procfile `web:` command (uvicorn, 2 workers), both
     on free loopback ports, and runs the same wrk load against each: random ids, 32
     connections, same duration, every request with `Authorization: Token <reader token>`
     (the bare app ignores it). Prints req/s, p50/p99 and the ratio ours/bare.
  4. Times list requests (substring filters on 3 letters, deep keyset pages) and prints the
     EXPLAIN of the filter queries.

Usage: DJANGO_DEBUG=true .venv/bin/python bench/bench_http_read.py [--duration 10]
Needs wrk (apt-get install wrk). Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "viswals.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")

import django  # noqa: E402

django.setup()

import logging  # noqa: E402

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from users import cache  # noqa: E402
from users.filters import UserFilter  # noqa: E402
from users.models import User  # noqa: E402
from users.payloads import to_json, user_payload  # noqa: E402
from users.selectors import user_list  # noqa: E402

ROWS = 500_000
CONNECTIONS = 32
PY = sys.executable
# The throttles run (their Redis counters are part of the measured path) but never block wrk.
SERVER_ENV = {
    **os.environ,
    "API_ANON_THROTTLE_RATE": "1000000000/minute",
    "API_USER_THROTTLE_RATE": "1000000000/minute",
    "LOG_LEVEL": "WARNING",
    "HOST": "127.0.0.1",
    "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # the venv's uvicorn
}


logging.getLogger("httpx").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_users() -> None:
    count = User.objects.count()
    # A generated 500k-row file stores ~496k users (duplicate ids and bad rows are part of it).
    if count >= ROWS * 0.95:
        print(f"database holds {count:,} users")
        return
    print(f"database holds {count:,} users: loading {ROWS:,}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "users.csv"
        subprocess.run(
            [PY, "data/generate_users.py", "--rows", str(ROWS), "--seed", "1", "--output",
             str(csv_path)],
            cwd=ROOT, check=True, timeout=600,
        )  # fmt: skip
        worker = subprocess.Popen(
            [PY, "-m", "celery", "-A", "viswals", "worker", "-Q", settings.INGEST_QUEUE, "-c",
             "2", "--loglevel", "WARNING", "-n", f"bench-http-{os.getpid()}@%h"],
            cwd=ROOT, env={**os.environ, "DATABASE_POOL": ""}, start_new_session=True,
        )  # fmt: skip
        try:
            subprocess.run(
                [PY, "manage.py", "publish_csv", str(csv_path), "--wait", "--timeout", "900"],
                cwd=ROOT, check=True, timeout=960,
            )  # fmt: skip
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
    print(f"database holds {User.objects.count():,} users", flush=True)


def warm_cache() -> list[int]:
    """Cache every user (skipping entries a newer write holds); return all ids."""
    started = time.perf_counter()
    ids: list[int] = []
    batch: list[tuple[int, int, str]] = []
    for user in User.objects.order_by().iterator(chunk_size=5000):
        version = (
            cache.ingest_version(run_id=user.source_run_id, line=user.source_line)
            if user.source_run_id is not None
            else 0
        )
        batch.append((user.id, version, to_json(user_payload(user))))
        ids.append(user.id)
        if len(batch) == 5000:
            cache.cache_users_if_newer(batch)
            batch = []
    cache.cache_users_if_newer(batch)
    print(f"cache warmed with {len(ids):,} users in {time.perf_counter() - started:.1f}s")
    return ids


def start(command: str, port: int, name: str) -> subprocess.Popen:
    process = subprocess.Popen(
        command, shell=True, cwd=ROOT, env={**SERVER_ENV, "PORT": str(port)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.2)
    stop(process)
    raise SystemExit(f"{name} did not start on port {port}")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def web_command() -> str:
    """The Procfile's web line (bound to loopback by SERVER_ENV's HOST)."""
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    return f"exec {line.removeprefix('web:').strip()}"


def wrk(port: int, script: Path, duration: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}"
    subprocess.run(  # warm-up: connections, code paths, pools
        ["wrk", "-t2", f"-c{CONNECTIONS}", "-d2s", "-s", str(script), url],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration + 30, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise SystemExit(f"errors during the run:\n{out}")

    def latency(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency("50%"),
        "p99": latency("99%"),
    }


def reader_token() -> str:
    """A fresh reader client's token (revoked at the end of the run)."""
    from users.services import api_client_create

    return api_client_create(name=READER, role="reader", expires_days=1)[1]


READER = "bench-http-reader"
AUTH: dict[str, str] = {}


def wrk_script(ids: list[int], directory: Path) -> Path:
    id_file = directory / "ids.txt"
    id_file.write_text("\n".join(map(str, random.Random(1).sample(ids, min(len(ids), 20000)))))
    script = directory / "ids.lua"
    script.write_text(
        f"""
local ids = {{}}
for line in io.lines("{id_file}") do ids[#ids + 1] = line end
math.randomseed(os.time())
local headers = {{["Accept"] = "application/json", ["Authorization"] = "{AUTH["Authorization"]}"}}
request = function()
  return wrk.format("GET", "/users/" .. ids[math.random(#ids)], headers)
end
"""
    )
    return script


def timed(base: str, paths: list[str]) -> tuple[float, float]:
    """p50 and p95 in ms of sequential GETs (one client, keep-alive)."""
    times = []
    headers = {"Accept": "application/json", **AUTH}
    with httpx.Client(base_url=base, timeout=10, headers=headers) as client:
        for path in paths:
            started = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code, response.text[:200])
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def substrings(values: list[str], count: int, rng: random.Random) -> list[str]:
    picked = []
    while len(picked) < count:
        value = rng.choice(values)
        if len(value) >= 3 and value.isalpha():
            start = rng.randrange(len(value) - 2)
            picked.append(value[start : start + 3].lower())
    return picked


def deep_pages(base: str, ordering: str, pages: int) -> list[str]:
    """Cursor URLs `pages` pages deep, by following `next` (the cursors are opaque)."""
    urls, url = [], f"/users?ordering={ordering}&page_size=1000"
    with httpx.Client(base_url=base, timeout=30, headers=AUTH) as client:
        for _ in range(pages):
            url = client.get(url).json()["next"].removeprefix(base)
            urls.append(url.replace("page_size=1000", "page_size=50"))
    return urls


def list_latencies(base: str) -> None:
    rng = random.Random(7)
    sample = list(
        User.objects.order_by("?").values_list("first_name", "email_address", "last_name")[:2000]
    )
    # "first last" pieces: the end of a first name, a space, the start of a last name; three
    # letters each, as a substring filter needs three in a row to use an index (else a 400).
    spans = [
        f"{first[-3:]} {last[:3]}".lower()
        for first, _, last in sample[:40]
        if len(first) >= 3 and len(last) >= 3
    ]
    names = substrings([first for first, _, _ in sample], 40, rng)
    emails = substrings([email.split("@")[0] for _, email, _ in sample], 40, rng)
    cases = {
        "GET /users (first page)": ["/users"] * 20,
        "GET /users?name=<3 letters>": [f"/users?name={q}" for q in names],
        "GET /users?email=<3 letters>": [f"/users?email={q}" for q in emails],
        'GET /users?name=<"xxx yyy", across first+last>': [f"/users?name={q}" for q in spans],
        "GET /users?name=<3>&ordering=last_name": [
            f"/users?name={q}&ordering=last_name" for q in names[:20]
        ],
        "GET /users deep keyset page (~50k rows in)": deep_pages(base, "id", 50)[-20:],
        "GET /users?ordering=-last_name deep page": deep_pages(base, "-last_name", 50)[-20:],
    }
    print("\nlist latency (one client, sequential), ms:")
    for label, paths in cases.items():
        p50, p95 = timed(base, paths)
        print(f"  {label:<48} p50 {p50:6.1f}   p95 {p95:6.1f}   (n={len(paths)})")
    # A common substring is found fastest walking the primary key (the planner's choice); a
    # rare one goes through the trigram index. Show both kinds for each filter.
    for label, candidates in (("name", names[:15]), ("email", emails[:15])):
        counts = {q: UserFilter({label: q}, queryset=user_list()).qs.count() for q in candidates}
        for q in (max(counts, key=counts.get), min(counts, key=counts.get)):
            queryset = UserFilter({label: q}, queryset=user_list()).qs.order_by("id")[:51]
            print(f"\nEXPLAIN ANALYZE GET /users?{label}={q} ({counts[q]:,} matches):")
            print(queryset.explain(analyze=True))
    queryset = UserFilter({"name": spans[0]}, queryset=user_list()).qs.order_by("id")[:51]
    print(f"\nEXPLAIN ANALYZE GET /users?name={spans[0]} (across first and last name):")
    print(queryset.explain(analyze=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    ensure_users()
    ids = warm_cache()
    # The bare app reads the same keys: the prefix names this database (users.cache).
    SERVER_ENV["BENCH_USER_KEY_PREFIX"] = cache.user_key("")
    AUTH["Authorization"] = f"Token {reader_token()}"
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE users_user")
    connection.close()
    with tempfile.TemporaryDirectory() as tmp:
        script = wrk_script(ids, Path(tmp))
        bare_port, web_port = free_port(), free_port()
        results = {}
        bare = start(
            "exec uvicorn bench.bare_asgi_redis:app "
            f"--host 127.0.0.1 --port {bare_port} --workers 2 --no-access-log --log-level warning",
            bare_port,
            "bare ASGI app",
        )
        try:
            results["bare"] = wrk(bare_port, script, args.duration)
        finally:
            stop(bare)
        web = start(web_command(), web_port, "Procfile web")
        try:
            results["ours"] = wrk(web_port, script, args.duration)
            print(f"\nGET /users/{{id}}, warm cache, wrk {CONNECTIONS} connections, "
                  f"{args.duration}s, random ids among {len(ids):,}:")  # fmt: skip
            for name, label in (("bare", "bare ASGI + 1 Redis GET"), ("ours", "Procfile web")):
                r = results[name]
                print(
                    f"  {label:<25} {r['rps']:9,.0f} req/s   p50 {r['p50']:6.2f} ms"
                    f"   p99 {r['p99']:6.2f} ms"
                )
            ratio = results["ours"]["rps"] / results["bare"]["rps"]
            print(f"  ratio ours (authenticated)/bare: {ratio:.0%} (target >= 35%); "
                  f"p99 {results['ours']['p99']:.1f} ms (target <= 25 ms)")  # fmt: skip
            list_latencies(f"http://127.0.0.1:{web_port}")
        finally:
            stop(web)
            from users.services import api_tokens_revoke

            api_tokens_revoke(name=READER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
