"""What every test process and the processes it starts run with. Loaded before Django (pytest
`-p tests.support.environment`, see pyproject.toml).

This run's own names: every pytest process gets its own database, Redis key prefix, stream
channel and queue (suffixed with its process id, `RUN_ID`), so runs never see each other's data
and delete only what they made.

A secret key (and email keys) of this run's own. Settings refuse, with debug off, a key that is
short or published in the repository (viswals/secret_key.py, viswals/email_keys.py), and the
test processes run with debug off: so no fixed test key is kept anywhere, and whatever
DJANGO_SECRET_KEY (EMAIL_*) the shell has is replaced. Subprocesses (web servers, workers)
inherit them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

RUN_ID = f"t{os.getpid()}"
ROOT = Path(__file__).resolve().parent.parent.parent

# Read by settings.py in every subprocess tests start (workers, web servers); this process's
# settings take the names of this run's data in tests/conftest.py's pytest_configure.
TEST_ENV = {
    # As production runs: debug off (the key above; the hosts tests call; static files collected
    # once per run, tests/support/servers.py). Plain HTTP on loopback: no HTTPS redirect.
    "DJANGO_DEBUG": "false",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "DJANGO_STATIC_ROOT": str(Path(tempfile.gettempdir()) / f"viswals-static-{RUN_ID}"),
    "USERS_CACHE_PREFIX": f"{RUN_ID}:users:v2",
    "INGEST_QUEUE": f"ingest-{RUN_ID}",
    "STREAM_CHANNEL": f"{RUN_ID}-users",
    "STREAM_KEY_PREFIX": f"{RUN_ID}:sse",
    "LOG_LEVEL": "WARNING",
}


def random_secret_key() -> str:
    """A key the production rules accept, new on every call."""
    return secrets.token_urlsafe(50)


os.environ["DJANGO_SECRET_KEY"] = random_secret_key()


def random_email_keys() -> dict[str, str]:
    """Email keys the production rules accept (viswals/email_keys.py), new on every call: a
    two-key ring (the current key first) and the blind index's key."""
    ring = f"t1:{secrets.token_urlsafe(32)},t0:{secrets.token_urlsafe(32)}"
    return {"EMAIL_ENCRYPTION_KEYS": ring, "EMAIL_BLIND_INDEX_KEY": secrets.token_urlsafe(32)}


os.environ.update(random_email_keys())


def database_url() -> str:
    """This run's test database, as a DATABASE_URL."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a process that must share this test run's database, keys and queue."""
    env = {**os.environ, **TEST_ENV, "DATABASE_URL": database_url(), **extra}
    env.pop("DATABASE_POOL", None)
    return env


def bare_env(**extra: str) -> dict[str, str]:
    """No DJANGO_* or service variables from the test run: only what the test gives."""
    keep = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    return {**keep, **extra}


def settings_value(expression: str, **env: str) -> subprocess.CompletedProcess:
    """Print `expression` (of `settings`) from a fresh process whose environment is only `env`."""
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'viswals.settings'; "
        f"django.setup(); from django.conf import settings; print({expression})"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=bare_env(**env), capture_output=True, text=True
    )
