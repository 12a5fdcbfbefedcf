"""Production settings: debug off unless asked, a required secret key, `check --deploy` clean
with the documented production environment, and the connection budget within PostgreSQL's."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT

ENV_EXAMPLE = ROOT / ".env.example"


def bare_env(**extra: str) -> dict[str, str]:
    """No DJANGO_* or service variables from the test run: only what the test gives."""
    keep = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    return {**keep, **extra}


def production_env() -> dict[str, str]:
    pairs = re.findall(r"^([A-Z_]+)=(.*)$", ENV_EXAMPLE.read_text(), re.M)
    return dict(pairs)


def settings_value(expression: str, **env: str) -> subprocess.CompletedProcess:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'viswals.settings'; "
        f"django.setup(); from django.conf import settings; print({expression})"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=bare_env(**env), capture_output=True, text=True
    )


def test_debug_is_off_unless_set():
    result = settings_value(
        "settings.DEBUG, settings.LOGGING['handlers']['console']['formatter'], "
        "settings.STORAGES['staticfiles']['BACKEND'].rsplit('.', 1)[-1], "
        "settings.SESSION_COOKIE_SECURE",
        DJANGO_SECRET_KEY="k" * 60,
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

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in result.stderr


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


def test_connection_budget_fits_postgresql_max_connections():
    env = production_env()
    web = int(env["WEB_CONCURRENCY"]) * int(env["DATABASE_POOL_MAX"])
    worker = int(env["WORKER_CONCURRENCY"])  # one persistent connection per prefork child
    # README "Operations": one web and one worker container per host, up to 4 hosts, plus
    # publish_csv, readiness probes, migrations and PostgreSQL's superuser reserve (3).
    assert 4 * (web + worker) + 3 + 10 <= 100
    result = settings_value(
        "settings.DATABASES['default']['OPTIONS']['pool']['max_size']",
        DJANGO_DEBUG="true",
        DATABASE_POOL="true",
        DATABASE_POOL_MAX=env["DATABASE_POOL_MAX"],
    )
    assert result.stdout.strip() == env["DATABASE_POOL_MAX"], result.stderr
