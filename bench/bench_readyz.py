"""A flood of readiness probes: 200 concurrent GET /readyz against the Procfile's web server
(uvicorn, 2 workers, debug off), several rounds; the baseline is the same flood of /healthz,
which touches no dependency, in the same run.

Prints, for each endpoint, the share of answers that were not 200 and the latency p50/p99, and
the ratio of /readyz's p99 to /healthz's. PostgreSQL, Redis and RabbitMQ must be up.
Usage: .venv/bin/python bench/bench_readyz.py [--concurrency 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time

import httpx
from scratch import free_port, start_web_server


async def flood(base: str, path: str, concurrency: int) -> list[tuple[int, float]]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:

        async def one() -> tuple[int, float]:
            started = time.perf_counter()
            try:
                status = (await client.get(path)).status_code
            except httpx.HTTPError:
                status = 0
            return status, time.perf_counter() - started

        return await asyncio.gather(*(one() for _ in range(concurrency)))


def summary(results: list[tuple[int, float]]) -> tuple[float, float, float]:
    bad = sum(1 for status, _ in results if status != 200) / len(results)
    latencies = sorted(seconds for _, seconds in results)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return bad, statistics.median(latencies), p99


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    port = free_port()
    env = {
        **os.environ,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "EMAIL_ENCRYPTION_KEYS": f"bench:{secrets.token_urlsafe(32)}",
        "EMAIL_BLIND_INDEX_KEY": secrets.token_urlsafe(32),
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        # Readiness connects to a database; any existing one will do.
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "LOG_LEVEL": "ERROR",
    }
    server = start_web_server(port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print("server did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)

        figures = {}
        for path in ("/healthz", "/readyz"):
            results: list[tuple[int, float]] = []
            for _ in range(args.rounds):
                results += asyncio.run(flood(base, path, args.concurrency))
                time.sleep(0.5)
            figures[path] = summary(results)
            bad, p50, p99 = figures[path]
            print(
                f"{path:9} {args.rounds} x {args.concurrency} concurrent: "
                f"not 200 {bad:.1%}, p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
            )
        ratio = figures["/readyz"][2] / figures["/healthz"][2]
        print(f"/readyz p99 / /healthz p99 = {ratio:.2f}")
    finally:
        server.terminate()
        server.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
