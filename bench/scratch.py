"""What the benchmarks share: a scratch environment of their own (database, Redis key prefix,
SSE channel and queue, named after a tag) that is removed at the end, and helpers around it."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_web_server(port: int, env: dict[str, str], workers: int = 2) -> subprocess.Popen:
    """The Procfile's web command (scripts/web.sh: uvicorn, with a metrics directory of its own)
    on a loopback port, running the uvicorn installed beside this interpreter; output dropped."""
    return subprocess.Popen(
        ["sh", "scripts/web.sh"],
        cwd=ROOT,
        env={
            **env,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            "PATH": f"{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def generate_users(rows: int, path: Path) -> None:
    """Make the benchmark's CSV with data/generate_users.py (once: it is reused if present)."""
    if not path.exists():
        command = [PY, "data/generate_users.py", "--rows", str(rows), "--seed", "1"]
        subprocess.run([*command, "--output", str(path)], cwd=ROOT, check=True)


class Scratch:
    """A database, Redis prefix, SSE channel and queue for one benchmark run."""

    def __init__(self, tag: str, **extra_env: str) -> None:
        self.tag = tag
        self.db = f"viswals_{tag}"
        self.queue = f"ingest-{tag}"
        self.env = {
            **os.environ,
            # Production settings: debug off (no query log, no debug cursor wrappers).
            "DJANGO_DEBUG": "false",
            # A key of this run's own: settings refuse one published in the repository.
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            # Email keys of this run's own likewise (viswals/email_keys.py).
            "EMAIL_ENCRYPTION_KEYS": f"bench:{secrets.token_urlsafe(32)}",
            "EMAIL_BLIND_INDEX_KEY": secrets.token_urlsafe(32),
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{self.db}",
            "USERS_CACHE_PREFIX": f"{tag}:users:v2",
            "INGEST_QUEUE": self.queue,
            "STREAM_CHANNEL": f"{tag}-users",
            "STREAM_KEY_PREFIX": f"{tag}:sse",
            "LOG_LEVEL": "WARNING",
            **extra_env,
        }
        self.env.pop("DATABASE_POOL", None)

    def psql(self, sql: str, db: str | None = None) -> str:
        command = ["psql", "-q", "-X", "-h", "127.0.0.1", "-U", "postgres", "-d", db or self.db]
        return subprocess.run(
            [*command, "-v", "ON_ERROR_STOP=1", "-t", "-A", "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def manage(self, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, "manage.py", *args], cwd=ROOT, env={**self.env, **(env or {})}, check=True,
            **kwargs,
        )  # fmt: skip

    def publish_and_wait(self, path: Path, env: dict | None = None) -> float:
        """Run `publish_csv PATH --wait` (workers must be running); return the seconds taken.
        `env`: extra environment of publish_csv."""
        started = time.perf_counter()
        self.manage(
            "publish_csv", str(path), "--wait", "--timeout", "600", env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return time.perf_counter() - started

    def create(self) -> None:
        """Create the database and migrate it."""
        self.psql(f"CREATE DATABASE {self.db}", db="postgres")
        self.manage("migrate", "--noinput", stdout=subprocess.DEVNULL)

    def start_worker(self, concurrency: int = 2) -> subprocess.Popen:
        """The Procfile's worker (Celery prefork) on the scratch queue, connected and ready."""
        worker = subprocess.Popen(
            [PY, "-m", "celery", "-A", "viswals", "worker", "-Q", self.queue,
             "-c", str(concurrency), "--loglevel", "WARNING", "--without-gossip",
             "--without-mingle", "-n", f"{self.tag}@%h"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(4)  # let it connect before any clock starts
        return worker

    def flush_redis(self) -> None:
        """Delete every Redis key under the tag (the users cache, the event history)."""
        subprocess.run(
            f"redis-cli --scan --pattern '{self.tag}:*' | xargs -r -n 1000 redis-cli del "
            ">/dev/null",
            shell=True,
        )

    def cleanup(self) -> None:
        """Drop the database, the queue and every Redis key under the tag."""
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", self.queue], capture_output=True)
        self.flush_redis()
        self.psql(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)", db="postgres")
