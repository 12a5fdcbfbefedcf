"""/healthz (liveness, no dependency) and /readyz (PostgreSQL, Redis, broker, short timeouts)."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import AsyncClient, override_settings

from tests.ops.conftest import free_port


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
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "postgres": "ok",
        "redis": "ok",
        "broker": "ok",
    }


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(
    ("dependency", "setting"),
    [("postgres", "DATABASES"), ("redis", "REDIS_URL"), ("broker", "CELERY_BROKER_URL")],
)
def test_readyz_names_a_dead_dependency_quickly(client, dependency, setting):
    started = time.monotonic()
    with override_settings(**{setting: dead_dependencies()[setting]}):
        response = client.get("/readyz")
    took = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == [dependency]
    assert body["checks"][dependency]["status"] == "error"
    assert body["checks"][dependency]["error"]
    assert "Traceback" not in response.content.decode()
    assert took < 1.5, f"readiness took {took:.2f}s"


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
