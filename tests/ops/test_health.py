"""/healthz (liveness, no dependency) and /readyz (PostgreSQL, Redis, broker, short timeouts,
one check at a time per process, a body naming only what fails)."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import AsyncClient, override_settings

from tests.support.servers import free_port
from viswals import health


@pytest.fixture(autouse=True)
def fresh_readiness(monkeypatch):
    """No result of an earlier test (taken with other settings) is reused."""
    monkeypatch.setattr(health, "_readiness", health.Readiness())


def dead_dependencies() -> dict:
    port = free_port()
    return {
        "DATABASES": {"default": {**settings.DATABASES["default"], "PORT": port}},
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{port}//",
    }


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_healthz_answers_without_any_dependency():
    with override_settings(**dead_dependencies()):
        response = async_to_sync(AsyncClient().get)("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_every_dependency_ok(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok"}


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(
    ("dependency", "setting"),
    [("postgres", "DATABASES"), ("redis", "REDIS_URL"), ("broker", "CELERY_BROKER_URL")],
)
def test_readyz_names_only_the_dead_dependency_and_logs_why(client, dependency, setting, caplog):
    started = time.monotonic()
    with (
        override_settings(**{setting: dead_dependencies()[setting]}),
        caplog.at_level(logging.WARNING, logger="viswals.health"),
    ):
        response = client.get("/readyz")
    took = time.monotonic() - started

    assert response.status_code == 503
    # Nothing but the name: no host, port, user or error text.
    assert response.json() == {"status": "unavailable", "failing": [dependency]}
    assert took < 1.5, f"readiness took {took:.2f}s"
    # The details are in the log: one line for the dependency, without a traceback (and not a
    # line per probe from django.request: the check's lines say it all).
    (record,) = caplog.records
    assert record.getMessage().startswith(f"readiness: {dependency} failing: ")
    assert record.exc_info is None and "\n" not in record.getMessage()


@pytest.mark.parametrize(
    ("dependency", "setting", "url"),
    [
        ("redis", "REDIS_URL", "redis://127.0.0.1:{port}/0"),
        ("broker", "CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:{port}//"),
    ],
)
def test_readyz_gives_up_on_a_hung_dependency_within_a_second(
    client, silent_port, dependency, setting, url
):
    started = time.monotonic()
    with override_settings(**{setting: url.format(port=silent_port)}):
        response = client.get("/readyz")
    took = time.monotonic() - started

    assert response.status_code == 503
    assert response.json()["failing"] == [dependency]
    assert took < 1.5, f"readiness took {took:.2f}s"


def test_probes_are_not_redirected_to_https(client):
    with override_settings(SECURE_SSL_REDIRECT=True):
        assert client.get("/healthz").status_code == 200
        assert client.get("/users?page_size=1").status_code == 301


def test_probes_share_one_check_at_a_time_and_reuse_it_for_a_second(monkeypatch):
    calls: list[float] = []

    def slow_check() -> None:
        calls.append(time.monotonic())
        time.sleep(0.2)  # a slow check: the other probes arrive while it runs

    monkeypatch.setattr(health, "CHECKS", {"postgres": slow_check})

    async def probes(count: int) -> list[list[str]]:
        return await asyncio.gather(*(health.failing_dependencies() for _ in range(count)))

    assert async_to_sync(probes)(100) == [[]] * 100
    assert len(calls) == 1  # 100 concurrent probes, one check
    assert async_to_sync(probes)(10) == [[]] * 10
    assert len(calls) == 1  # reused: less than a second old
    time.sleep(health.MAX_AGE)  # deliberately: the result has to be older than its age limit
    async_to_sync(probes)(10)
    assert len(calls) == 2  # older than a second: checked again, once


@pytest.mark.django_db(transaction=True)
def test_a_flood_of_probes_on_a_real_server_all_get_200(web_server):
    server = web_server(workers=2)

    async def flood() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.base, limits=limits, timeout=10) as client:
            responses = await asyncio.gather(*(client.get("/readyz") for _ in range(200)))
        return [response.status_code for response in responses]

    for _ in range(2):  # the second round reuses or renews the first's result
        statuses = async_to_sync(flood)()
        assert statuses == [200] * 200, {s: statuses.count(s) for s in set(statuses)}


@pytest.mark.django_db(transaction=True)
def test_a_real_server_names_only_the_dependency_that_is_down(web_server):
    server = web_server(workers=1, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    response = httpx.get(f"{server.base}/readyz", timeout=5)

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failing": ["redis"]}
    server.stop()
    lines = [line for line in server.log().splitlines() if "readiness: redis failing" in line]
    assert len(lines) == 1, server.log()[-3000:]
    assert "Traceback" not in server.log()
