"""Production settings: debug off unless asked, a secret key that is long, random and not
published (or one line and exit status 3 from every process), `check --deploy` clean with the
documented production environment, and the connection budget within PostgreSQL's."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.environment import (
    ROOT,
    bare_env,
    random_email_keys,
    random_secret_key,
    settings_value,
)
from viswals.secret_key import STARTUP_FAILURE, secret_key_problem

ENV_EXAMPLE = ROOT / ".env.example"


def production_env() -> dict[str, str]:
    """.env.example's values, with a key of this test's own for its placeholder."""
    pairs = re.findall(r"^([A-Z_]+)=(.*)$", ENV_EXAMPLE.read_text(), re.M)
    return {**dict(pairs), "DJANGO_SECRET_KEY": random_secret_key(), **random_email_keys()}


def published_secret_keys() -> dict[str, str]:
    """Every DJANGO_SECRET_KEY value a file of the repository sets, by where it is set.

    Quoted literals anywhere (`"DJANGO_SECRET_KEY": "..."`, `_DEV_SECRET_KEY = "..."`), bare
    values in other files than Python (`.env`, YAML, Makefile, Dockerfile, README), and
    Compose/shell defaults (`${DJANGO_SECRET_KEY:-...}`); shell expansions are not values."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    quoted = re.compile(r"SECRET_KEY[\"']?\s*[=:]\s*([\"'])(.*?)\1")
    bare = re.compile(r"DJANGO_SECRET_KEY\s*[=:][ \t]*([^\s\"'$(?\-][^\s\"'}]*)")
    default = re.compile(r"\$\{DJANGO_SECRET_KEY:?-([^}]*)\}")
    found: dict[str, str] = {}
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in {".csv", ".png"}:
            continue
        text = path.read_text(errors="replace")
        patterns = [quoted, default] + ([] if name.endswith(".py") else [bare])
        for pattern in patterns:
            for match in pattern.finditer(text):
                value = match.group(match.lastindex)
                if not value.startswith("$"):
                    line = text.count("\n", 0, match.start()) + 1
                    found[f"{name}:{line}"] = value
    return found


def run_without_a_usable_key(command: list[str], key: str | None, timeout: float = 60):
    env = bare_env() if key is None else bare_env(DJANGO_SECRET_KEY=key)
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_debug_is_off_unless_set():
    result = settings_value(
        "settings.DEBUG, settings.LOGGING['handlers']['console']['formatter'], "
        "settings.STORAGES['staticfiles']['BACKEND'].rsplit('.', 1)[-1], "
        "settings.SESSION_COOKIE_SECURE",
        DJANGO_SECRET_KEY=random_secret_key(),
        **random_email_keys(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "False",
        "json",
        "CompressedManifestStaticFilesStorage",
        "True",
    ]


def test_development_logs_are_text():
    result = settings_value(
        "settings.LOGGING['handlers']['console']['formatter']", DJANGO_DEBUG="true"
    )
    assert result.stdout.strip() == "text", result.stderr


def test_secret_key_is_required_when_debug_is_off():
    result = settings_value("settings.DEBUG")

    assert result.returncode == STARTUP_FAILURE
    assert result.stderr.startswith("viswals: DJANGO_SECRET_KEY is not set")


def test_a_development_key_needs_debug_on():
    assert settings_value("settings.DEBUG", DJANGO_DEBUG="true").stdout.strip() == "True"
    result = settings_value("settings.DEBUG", DJANGO_DEBUG="true", DJANGO_SECRET_KEY="dev")
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (None, "is not set"),
        ("", "is not set"),
        ("insecure-test-only-key", "shorter than 50 characters"),
        ("ab" * 40, "fewer than 5 different characters"),
        # A fresh key every run: its id names it without the key, the same in every process.
        pytest.param(
            "django-insecure-" + random_secret_key(),
            "starts with 'django-insecure-'",
            id="django-insecure-random-starts with 'django-insecure-'",
        ),
        (
            "change-me-to-a-long-random-string-of-at-least-fifty-characters-0123456789",
            "published",
        ),
        ("compose-local-secret-key-change-me-for-any-real-deployment-000", "published"),
    ],
)
def test_any_command_stops_with_one_line_on_an_unusable_key(key, reason):
    result = run_without_a_usable_key([sys.executable, "manage.py", "migrate"], key)

    assert result.returncode == STARTUP_FAILURE
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert reason in result.stderr
    assert "token_urlsafe" in result.stderr  # says how to make one


def test_celery_and_uvicorn_stop_with_one_line_without_a_key():
    celery = run_without_a_usable_key(
        [sys.executable, "-m", "celery", "-A", "viswals", "worker", "-Q", "none"], None
    )
    assert celery.returncode == STARTUP_FAILURE
    assert celery.stderr.splitlines() == [celery.stderr.strip()]
    assert "DJANGO_SECRET_KEY is not set" in celery.stderr

    # uvicorn's supervisor stops instead of restarting its workers (status 3 is its start-up
    # failure); each worker says why once, and there is no traceback.
    command = [sys.executable, "-m", "uvicorn", "viswals.asgi:application", "--port", "0"]
    for extra in ([], ["--workers", "2"]):
        uvicorn = run_without_a_usable_key(command + extra, None, timeout=30)
        ours = [line for line in uvicorn.stderr.splitlines() if line.startswith("viswals:")]
        assert 1 <= len(ours) <= 2, uvicorn.stderr
        assert "Traceback" not in uvicorn.stderr


def test_every_secret_key_published_in_the_repository_is_refused():
    published = published_secret_keys()
    # The scan finds what it must: the placeholders of .env.example and the development key.
    assert any(place.startswith(".env.example:") for place in published)
    assert any(place.startswith("viswals/settings.py:") for place in published)
    accepted = {place: key for place, key in published.items() if not secret_key_problem(key)}
    assert not accepted, (
        "a usable DJANGO_SECRET_KEY is published here; use a placeholder the rules refuse, or "
        f"add its SHA-256 to viswals/secret_key.py PUBLISHED_KEY_DIGESTS: {accepted}"
    )


def test_compose_carries_no_secret_of_its_own():
    # The environment's or .env's value, else empty: then the entrypoint exports the one the
    # `setup` service made into its volume (tests/test_first_start.py). Never a default here.
    compose = (ROOT / "docker-compose.yml").read_text()
    for name in ("DJANGO_SECRET_KEY", "METRICS_TOKEN"):
        assert re.findall(rf"^\s*{name}:.*$", compose, re.M) == [f"    {name}: ${{{name}:-}}"]


def test_check_deploy_passes_with_the_production_environment():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=bare_env(**production_env()),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_login_lockout_is_configured_from_the_environment():
    expression = "settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME"
    default = settings_value(expression, DJANGO_DEBUG="true")
    assert default.stdout.strip() == "5 0:15:00", default.stderr
    changed = settings_value(
        expression, DJANGO_DEBUG="true", AXES_FAILURE_LIMIT="3", AXES_COOLOFF_MINUTES="0"
    )
    assert changed.stdout.strip() == "3 None", changed.stderr  # 0: locked until unlocked


def test_connection_budget_fits_postgresql_max_connections():
    env = production_env()
    web = int(env["WEB_CONCURRENCY"]) * int(env["DATABASE_POOL_MAX"])
    worker = int(env["WORKER_CONCURRENCY"])  # one persistent connection per prefork child
    # docs/deployment.md "Connection budget": one web and one worker container per host, up to
    # 4 hosts, plus publish_csv, readiness probes, migrations and PostgreSQL's superuser reserve.
    assert 4 * (web + worker) + 3 + 10 <= 100
    result = settings_value(
        "settings.DATABASES['default']['OPTIONS']['pool']['max_size']",
        DJANGO_DEBUG="true",
        DATABASE_POOL="true",
        DATABASE_POOL_MAX=env["DATABASE_POOL_MAX"],
    )
    assert result.stdout.strip() == env["DATABASE_POOL_MAX"], result.stderr


@pytest.mark.parametrize(
    "host, debug, refused",
    [
        ("0.0.0.0", "true", True),
        ("192.168.1.20", "yes", True),
        ("::", "1", True),
        ("127.0.0.1", "true", False),
        ("localhost", "true", False),
        ("::1", "true", False),
        ("0.0.0.0", "false", False),  # production settings: a key of your own is required
    ],
)
def test_local_runs_with_debug_on_serve_loopback_only(host, debug, refused):
    """`HOST=0.0.0.0 make run` used to serve debug pages and the published development key to
    the network: now it stops with one line before anything starts."""
    result = subprocess.run(
        ["make", "--no-print-directory", "local-host-check"],
        cwd=ROOT, env=bare_env(HOST=host, DJANGO_DEBUG=debug), capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert (result.returncode != 0) is refused
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
    if refused:
        assert lines == [
            f"refusing HOST={host} with DJANGO_DEBUG on: debug pages and the published "
            "development key must not reach the network; use HOST=127.0.0.1, or "
            "DJANGO_DEBUG=false and a DJANGO_SECRET_KEY of your own"
        ]
    else:
        assert lines == []


def test_make_run_and_make_web_check_the_host_before_anything_else():
    for target in ("run", "web"):
        plan = subprocess.run(
            ["make", "--no-print-directory", "-n", target],
            cwd=ROOT, env=bare_env(), capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert "loopback-when-debug.sh" in plan.stdout.splitlines()[0], target
