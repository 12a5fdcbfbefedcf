"""Fixtures and hooks shared by every test. Helpers live in tests/support/ (its package docstring
maps them); this run's own names (database, Redis prefix, channel, queue) come from
tests/support/environment.py."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.support.data import HEADER
from tests.support.environment import RUN_ID, TEST_ENV
from tests.support.servers import WebServer, Worker, collected_static


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        action="store_true",
        help="also run the tests marked `cluster` (own PostgreSQL/RabbitMQ clusters; slow)",
    )
    parser.addoption(
        "--restarts",
        action="store_true",
        help="also run the tests marked `restarts_services`, which restart the machine's shared "
        "PostgreSQL, Redis and RabbitMQ (make test-restarts)",
    )


# Opt-in markers: a test carrying one runs only with its option.
OPT_IN = {
    "cluster": ("--cluster", "starts clusters of its own: make test-cluster (--cluster)"),
    "restarts_services": (
        "--restarts",
        "restarts the shared PostgreSQL, Redis or RabbitMQ: make test-restarts (--restarts)",
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` touches only what it created: tests that start clusters of their own or
    restart the services everyone on the machine shares are skipped unless asked for."""
    skips = {
        marker: pytest.mark.skip(reason=reason)
        for marker, (option, reason) in OPT_IN.items()
        if not config.getoption(option)
    }
    for item in items:
        for marker, skip in skips.items():
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Collect the web servers' static files in the background while the first tests run, if
    any test starts a web server."""
    if any(_starts_a_web_server(item) for item in session.items):
        collected_static.start()


def _starts_a_web_server(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    return "web_server" in getattr(item, "fixturenames", ()) or hasattr(module, "WebServer")


def pytest_unconfigure(config: pytest.Config) -> None:
    collected_static.remove()


def pytest_configure(config: pytest.Config) -> None:
    # Settings are loaded by now; these are read at call time, so overriding them here is enough.
    settings.INGEST_QUEUE = TEST_ENV["INGEST_QUEUE"]
    settings.USERS_CACHE_PREFIX = TEST_ENV["USERS_CACHE_PREFIX"]
    settings.STREAM_CHANNEL = TEST_ENV["STREAM_CHANNEL"]
    settings.STREAM_KEY_PREFIX = TEST_ENV["STREAM_KEY_PREFIX"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = f"test_viswals_{RUN_ID}"


@pytest.fixture(scope="session", autouse=True)
def _clean_redis_and_queue():
    """Delete this run's Redis keys and queue at the end of the session."""
    yield
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    keys = list(client.scan_iter(f"{RUN_ID}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    from viswals.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in (TEST_ENV["INGEST_QUEUE"],):
            channel.queue_delete(queue)


@pytest.fixture
def api_token(db):
    """Make API clients: `api_token("reader")` (or "writer", or None for an account with no
    permission) returns a fresh token of a new account."""
    from django.contrib.auth import get_user_model

    from users.services import api_client_create, api_token_create

    counter = iter(range(1_000_000))

    def make(role: str | None = "reader") -> str:
        name = f"{RUN_ID}-{role or 'nobody'}-{next(counter)}"
        if role is None:
            account = get_user_model().objects.create_user(name)
            return api_token_create(account=account, expires_days=1)
        return api_client_create(name=name, role=role, expires_days=1)[1]

    return make


@pytest.fixture
def plain_static_storage(settings):
    """Pages that link static assets (browsable API, Swagger UI) without a collectstatic run:
    debug off selects the manifest storage, which needs one."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def login_account(db):
    """Make accounts that log in with a password: `login_account("reader", staff=True)` (or
    None for no permission) returns (username, password, session cookie (name, value))."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    from users.services import roles_ensure

    counter = iter(range(1_000_000))

    def make(role: str | None = "reader", *, staff: bool = False) -> tuple[str, str, tuple]:
        name, password = f"{RUN_ID}-login-{role or 'nobody'}-{next(counter)}", "pw-" + RUN_ID
        account = get_user_model().objects.create_user(name, password=password, is_staff=staff)
        if role is not None:
            roles_ensure()
            account.groups.add(Group.objects.get(name=role))
        client = Client()
        client.force_login(account)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        return name, password, (settings.SESSION_COOKIE_NAME, cookie.value)

    return make


@pytest.fixture
def redis_client():
    from users.cache import redis_client

    return redis_client()


@pytest.fixture
def web_server(django_db_setup, tmp_path):
    """Start web servers (the Procfile's uvicorn, on free loopback ports) with extra
    environment: `web_server(workers=1, API_READS_REQUIRE_AUTH="false")`; all stopped after.
    Module-scoped fixtures use `with WebServer(...) as server:` (tests/support/servers.py)."""
    servers: list[WebServer] = []

    def start(workers: int = 2, **env: str) -> WebServer:
        server = WebServer(tmp_path / f"web-{len(servers)}.log", workers=workers, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def live_web_server(web_server):
    """The base URL of a web server with the default environment."""
    return web_server(graceful_timeout=5).base


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real Celery worker (prefork, concurrency 2) consuming this run's ingest queue."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = Worker(log_path, TEST_ENV["INGEST_QUEUE"], RUN_ID, concurrency=2)
    yield worker
    worker.stop()


@pytest.fixture
def write_csv(tmp_path):
    """Write CSV text (or bytes) to a file and return its path."""
    counter = iter(range(1_000_000))

    def write(content: str | bytes, name: str | None = None) -> str:
        path = tmp_path / (name or f"users-{next(counter)}.csv")
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    return write


@pytest.fixture
def csv_header() -> str:
    return HEADER
