"""Real processes for tests: the Procfile's web command (scripts/web.sh: uvicorn) and Celery
workers, on loopback ports and this test run's queue, each with its output kept in a file.

The one way to start a web server is `WebServer`: through the `web_server` fixture in a test,
or `with WebServer(...) as server:` in a module-scoped fixture; either stops it afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.environment import ROOT, TEST_ENV, subprocess_env
from tests.support.waits import wait_until


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Process:
    """A child process (`command`, an argv) started with this test run's environment; its output
    goes to a file. A context manager: stopped on leaving the block."""

    stop_timeout = 15.0

    def __init__(self, log_path: Path, command: list[str], env: dict[str, str]) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=subprocess_env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self, is_ready, what: str, timeout: float = 30) -> None:
        """Wait for `is_ready`; a process that exits meanwhile fails at once, with its log."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{what} exited while starting:\n{self.log()[-3000:]}")
            return is_ready()

        try:
            wait_until(ready, timeout, f"{what} did not start", interval=0.1)
        except AssertionError as error:
            self.process.kill()
            raise RuntimeError(f"{error}:\n{self.log()[-3000:]}") from None

    def stop(self, timeout: float | None = None) -> float:
        """SIGTERM, as a process manager does; return the seconds it took to exit."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout or self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return time.monotonic() - started


class _CollectedStatic:
    """The static files web servers serve, collected once per run into DJANGO_STATIC_ROOT (as
    the image does at build time: debug off serves them through whitenoise's manifest). Started
    in the background when the run collects a test that starts a web server."""

    process: subprocess.Popen | None = None

    def start(self) -> None:
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
                cwd=ROOT,
                env={**os.environ, **TEST_ENV},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )

    def wait(self) -> None:
        self.start()
        output, _ = self.process.communicate(timeout=300)
        assert self.process.returncode == 0, f"collectstatic failed:\n{output.decode()[-3000:]}"

    def remove(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(TEST_ENV["DJANGO_STATIC_ROOT"], ignore_errors=True)


collected_static = _CollectedStatic()


class WebServer(_Process):
    """The Procfile's web command (scripts/web.sh) on a free loopback port, with a metrics
    directory of its own (PROMETHEUS_MULTIPROC_DIR) beside its log; `env` is added to this
    run's environment (`API_READS_REQUIRE_AUTH="false"`, ...)."""

    def __init__(
        self, log_path: Path, workers: int = 2, graceful_timeout: int = 3, **env: str
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        metrics_dir = tempfile.mkdtemp(prefix="metrics-", dir=log_path.parent)
        server_env = {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "WEB_GRACEFUL_TIMEOUT": str(graceful_timeout),
            "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
            # scripts/web.sh runs the uvicorn installed beside this interpreter.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        collected_static.wait()
        super().__init__(log_path, ["sh", str(ROOT / "scripts" / "web.sh")], server_env | env)
        self.wait_until_ready(self._healthy, "server")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False


class Worker(_Process):
    """A Celery worker process (prefork) on one queue; SIGTERM is Celery's warm shutdown.
    Without gossip, mingle and heartbeats (a quicker start) unless `all_steps`, as the
    Procfile's command runs it."""

    stop_timeout = 30.0

    def __init__(
        self,
        log_path: Path,
        queue: str,
        name: str,
        concurrency: int = 1,
        *,
        all_steps: bool = False,
        **env,
    ):
        command = [sys.executable, "-m", "celery", "-A", "viswals", "worker", "-Q", queue,
                   "-c", str(concurrency), "--loglevel", "INFO", "-n", f"{name}@%h"]  # fmt: skip
        if not all_steps:
            command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        super().__init__(log_path, command, {"INGEST_QUEUE": queue, **env})
        self.wait_until_ready(lambda: "ready." in self.log(), "worker")
