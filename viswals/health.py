"""Liveness (`/healthz`) and readiness (`/readyz`) probes for orchestrators and load balancers.

Liveness touches nothing outside the process: a dependency outage must not get healthy web
processes restarted. Readiness checks PostgreSQL, Redis and the broker in parallel, each with a
short timeout, on fresh connections (a pooled connection could hide an outage, and a pool
waiting for a free slot could hang the probe). The answer names each dependency and its
status; failures say which dependency and the kind of error, never a stack trace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.http import JsonResponse

logger = logging.getLogger(__name__)

# Seconds each check may take; the whole probe answers within about this long.
CHECK_TIMEOUT = 0.8
# Shared by probes; a check stuck past its timeout keeps a thread until its own socket timeout.
_executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix="readyz")


async def healthz(request):
    """Liveness: the process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def check_postgres() -> None:
    import psycopg

    db = settings.DATABASES["default"]
    tls = {k: v for k, v in db.get("OPTIONS", {}).items() if k.startswith("ssl")}
    with psycopg.connect(
        host=db.get("HOST") or "127.0.0.1",
        port=db.get("PORT") or 5432,
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        dbname=db["NAME"],
        connect_timeout=2,  # libpq's minimum; the probe's own deadline is shorter
        options=f"-c statement_timeout={int(CHECK_TIMEOUT * 1000)}",
        application_name="viswals-readyz",
        **tls,
    ) as connection:
        connection.execute("SELECT 1").fetchone()


def check_redis() -> None:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()


def check_broker() -> None:
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL, connect_timeout=CHECK_TIMEOUT) as connection:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=CHECK_TIMEOUT
        )


CHECKS: dict[str, Callable[[], None]] = {
    "postgres": check_postgres,
    "redis": check_redis,
    "broker": check_broker,
}


def _describe(error: BaseException) -> str:
    # The exception type and first line only: messages can be long, and no traceback.
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def run_checks() -> dict[str, dict[str, object]]:
    started = time.monotonic()
    futures = {name: _executor.submit(check) for name, check in CHECKS.items()}
    results: dict[str, dict[str, object]] = {}
    for name, future in futures.items():
        remaining = max(CHECK_TIMEOUT - (time.monotonic() - started), 0.01)
        try:
            future.result(timeout=remaining)
        except FutureTimeout:
            results[name] = {"status": "error", "error": f"no answer within {CHECK_TIMEOUT}s"}
        except Exception as error:
            results[name] = {"status": "error", "error": _describe(error)}
        else:
            results[name] = {"status": "ok"}
        results[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    return results


def readyz(request):
    """Readiness: 200 when every dependency answers, 503 naming the ones that do not."""
    checks = run_checks()
    failing = sorted(name for name, result in checks.items() if result["status"] != "ok")
    if failing:
        logger.warning("readiness: failing %s: %s", ", ".join(failing), checks)
        return JsonResponse(
            {"status": "unavailable", "failing": failing, "checks": checks}, status=503
        )
    return JsonResponse({"status": "ok", "checks": checks})
