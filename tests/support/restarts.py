"""What restarts or stops the real PostgreSQL, Redis and RabbitMQ, for the tests marked
`restarts_services` (run only with --restarts: `make test-restarts`). These services are shared
by everyone on this machine: each restart is kept short, and each helper returns only once the
service answers again."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from django.db import connections

from tests.support.environment import ROOT
from tests.support.waits import wait_until

HAVE_RABBITMQ = shutil.which("rabbitmqctl") is not None
HAVE_POSTGRESQL = shutil.which("pg_ctlcluster") is not None and Path("/etc/postgresql").is_dir()
HAVE_REDIS = shutil.which("redis-cli") is not None and shutil.which("redis-server") is not None


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def restart_rabbitmq(down_for: float = 1.0) -> None:
    """stop_app / start_app: the broker drops every connection, then takes them again."""
    rabbitmqctl("stop_app")
    try:
        time.sleep(down_for)  # deliberately down a while: clients must notice and retry
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


def _postgresql_ready() -> bool:
    result = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], timeout=10)
    return result.returncode == 0


def restart_postgresql() -> None:
    """A fast-mode restart: every session is terminated ("terminating connection due to
    administrator command"). This process's own connections are dropped afterwards, so its
    next query opens a fresh one."""
    (version,) = sorted(os.listdir("/etc/postgresql"))[:1]
    try:
        subprocess.run(
            [
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                version,
                "main",
                "restart",
                "-m",
                "fast",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        wait_until(_postgresql_ready, 60, "PostgreSQL did not come back", interval=0.2)
        for connection in connections.all():
            connection.close()


def _redis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def stop_redis() -> Path:
    """Shut Redis down, saving its data first (others' keys survive the restart); return the
    dump file, for start_redis to remove once it is loaded again."""
    directory = _redis("CONFIG", "GET", "dir").stdout.split()[-1]
    _redis("SHUTDOWN", "SAVE")
    wait_until(lambda: _redis("PING").stdout.strip() != "PONG", 30, "Redis did not stop")
    return Path(directory) / "dump.rdb"


def start_redis(dump: Path) -> None:
    """Start Redis as scripts/services-up.sh does (it starts whatever is down and waits)."""
    subprocess.run(
        ["bash", "scripts/services-up.sh"], cwd=ROOT, check=True, capture_output=True, timeout=180
    )
    wait_until(lambda: _redis("PING").stdout.strip() == "PONG", 60, "Redis did not come back")
    dump.unlink(missing_ok=True)  # Redis runs without persistence: the next start is empty


def restart_redis(down_for: float = 1.0) -> None:
    dump = stop_redis()
    try:
        time.sleep(down_for)  # deliberately down a while: clients must notice and retry
    finally:
        start_redis(dump)
