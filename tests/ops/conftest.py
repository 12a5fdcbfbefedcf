"""Helpers of the operations tests: a real web server process, and ports nothing answers on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import ROOT, subprocess_env


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never says a word (a hung dependency)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


class WebServer:
    """The Procfile's web command (uvicorn) on a free loopback port, output kept in a file."""

    def __init__(self, log_path: Path, workers: int = 2, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "viswals.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(workers),
                    "--timeout-graceful-shutdown",
                    "3",
                    "--no-access-log",
                ],
                cwd=ROOT,
                env=subprocess_env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"server did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> float:
        """SIGTERM, as a process manager does; return the seconds it took to exit."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return time.monotonic() - started


@pytest.fixture
def web_server(tmp_path):
    """Start web servers with extra environment; every one is stopped after the test."""
    servers: list[WebServer] = []

    def start(workers: int = 2, **env: str) -> WebServer:
        server = WebServer(tmp_path / f"web-{len(servers)}.log", workers=workers, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class Worker:
    """A Celery worker process (prefork) on one queue, output kept in a file."""

    def __init__(self, log_path: Path, queue: str, name: str, concurrency: int = 1, **env):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "viswals",
                    "worker",
                    "-Q",
                    queue,
                    "-c",
                    str(concurrency),
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-n",
                    f"{name}@%h",
                ],
                cwd=ROOT,
                env=subprocess_env(INGEST_QUEUE=queue, **env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while "ready." not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"worker did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM (Celery's warm shutdown); return the seconds it took to exit."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return time.monotonic() - started


@pytest.fixture
def start_worker(tmp_path, django_db_setup):
    """Start Celery workers with extra environment; every one is stopped after the test."""
    workers: list[Worker] = []

    def start(queue: str, concurrency: int = 1, **env: str) -> Worker:
        name = f"ops{len(workers)}-{os.getpid()}"
        worker = Worker(tmp_path / f"worker-{len(workers)}.log", queue, name, concurrency, **env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def ingest_queue():
    """A queue of this test's own (the session's worker must not take its batches); deleted."""
    queue = f"{settings.INGEST_QUEUE}-ops"
    with override_settings(INGEST_QUEUE=queue):
        yield queue
    from viswals.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)
