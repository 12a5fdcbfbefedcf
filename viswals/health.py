"""Liveness (`/healthz`) and readiness (`/readyz`) probes for orchestrators and load balancers.

Liveness touches nothing outside the process: a dependency outage must not get healthy web
processes restarted. Readiness checks PostgreSQL, Redis and the broker in parallel, each with a
short timeout, on fresh connections (a pooled connection could hide an outage, and a pool
waiting for a free slot could hang the probe).

Ready but degraded: the service answers, but a part of it is slow or incomplete (the users
table missing an index the model declares, outside a bulk import: searches scan the table).
The probe still answers 200 — taking every web process out of rotation would turn slow
searches into an outage — with `{"status": "degraded", "degraded": [names]}`, the names of
settings.READINESS_DEGRADED_CHECKS that say so; a monitor alerts on the status.

A flood of probes must not become a flood of connections to the dependencies: each process
runs one check at a time and answers every probe from a result at most MAX_AGE old; probes
that arrive while a check runs wait for it. The answer names only the failing dependencies
(no hosts, users or error texts, which a probe's caller has no need of); the details go to the
log, one line per failing dependency per check, without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.http import JsonResponse
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

# Seconds each check may take; the whole probe answers within about this long.
CHECK_TIMEOUT = 0.8
# Seconds a result is reused for, counted from the start of its check.
MAX_AGE = 1.0
# Runs the checks; a check stuck past its timeout keeps a thread until its own socket timeout.
_executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix="readyz")


async def healthz(request):
    """Liveness: the process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def check_postgres() -> None:
    import psycopg

    db = settings.DATABASES["default"]
    # TLS, and with a multi-host URL target_session_attrs: without it a check could pass
    # against a standby when it is the first host that answers.
    tls = {
        k: v
        for k, v in db.get("OPTIONS", {}).items()
        if k.startswith("ssl") or k == "target_session_attrs"
    }
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
    from users.redis import redis_ping

    redis_ping(timeout=CHECK_TIMEOUT)


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


def degraded_checks() -> dict[str, Callable[[], bool]]:
    """settings.READINESS_DEGRADED_CHECKS: name -> a function of an app saying whether that
    part of the service is degraded (it may touch the database; it runs beside the checks,
    under the same timeout, and an error or no answer counts as not degraded: the dependency
    checks report outages)."""
    return {name: import_string(path) for name, path in settings.READINESS_DEGRADED_CHECKS.items()}


@dataclass
class Readiness:
    """This process's last result (the failing dependencies and the degraded parts) and the
    check in flight."""

    failing: list[str] | None = None
    degraded: list[str] = field(default_factory=list)
    measured_at: float = 0.0
    running: asyncio.Task | None = None


_readiness = Readiness()


async def _measure(state: Readiness) -> list[str]:
    started = time.monotonic()
    futures = {name: asyncio.wrap_future(_executor.submit(check)) for name, check in CHECKS.items()}
    degraded_futures = {
        name: asyncio.wrap_future(_executor.submit(check))
        for name, check in degraded_checks().items()
    }
    await asyncio.wait([*futures.values(), *degraded_futures.values()], timeout=CHECK_TIMEOUT)
    degraded = []
    for name, future in degraded_futures.items():
        if not future.done():
            future.cancel()
        elif future.exception() is None and future.result():
            degraded.append(name)
    errors: dict[str, str] = {}
    for name, future in futures.items():
        if not future.done():
            future.cancel()
            errors[name] = f"no answer within {CHECK_TIMEOUT}s"
        elif (error := future.exception()) is not None:
            errors[name] = _describe(error)
    for name in sorted(errors):
        logger.warning("readiness: %s failing: %s", name, errors[name])
    for name in sorted(set(degraded) - set(state.degraded)):  # once, when it starts
        logger.warning("readiness: degraded: %s", name)
    state.failing, state.degraded, state.measured_at = sorted(errors), degraded, started
    return state.failing


async def failing_dependencies() -> list[str]:
    """The dependencies that do not answer, from a check at most MAX_AGE old (one at a time)."""
    state = _readiness
    if state.failing is not None and time.monotonic() - state.measured_at <= MAX_AGE:
        return state.failing
    loop = asyncio.get_running_loop()
    task = state.running
    # A task of another event loop (a test client runs each request in a loop of its own) is
    # not awaitable here; uvicorn's worker has one loop.
    if task is None or task.done() or task.get_loop() is not loop:
        task = state.running = loop.create_task(_measure(state))
    # Shielded: a probe that gives up (client gone) does not cancel the others' check.
    return await asyncio.shield(task)


async def readyz(request):
    """Readiness: 200 when every dependency answers ("ok", or "degraded" naming the parts
    that are), 503 naming the dependencies that do not."""
    failing = await failing_dependencies()
    if failing:
        response = JsonResponse({"status": "unavailable", "failing": failing}, status=503)
        # Logged once per check above, not once more per probe (django.request logs every 5xx;
        # a flood of probes during an outage would flood the log).
        response._has_been_logged = True
        return response
    report = await replicas_report()
    if degraded := _readiness.degraded:
        return JsonResponse({**report, "status": "degraded", "degraded": degraded})
    return JsonResponse({"status": "ok", **report})


async def replicas_report() -> dict:
    """Read replicas never make the process unready (their reads go to the primary): with
    replicas configured, `replicas` names each one's state, and the status is "degraded"
    while any is not ok. Empty without replicas. The states are the router's (at most a
    second or so old; viswals/db_router.py)."""
    from viswals.db_router import OK, replica_aliases, replica_states

    if not replica_aliases():
        return {}
    loop = asyncio.get_running_loop()
    check = loop.run_in_executor(_executor, lambda: replica_states(refresh=True))
    try:
        states = await asyncio.wait_for(asyncio.shield(check), CHECK_TIMEOUT)
    except TimeoutError:  # a check stuck on a dead host: answer with the last states seen
        states = replica_states()
    report: dict = {"replicas": {alias: state.status for alias, state in states.items()}}
    if any(state.status != OK for state in states.values()):
        report["status"] = "degraded"
    return report
