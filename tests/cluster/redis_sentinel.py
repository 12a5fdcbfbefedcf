"""A Redis primary, a replica and three Sentinels of this test run's own, for the Sentinel tests:
servers under /tmp/viswals-redis-*, on free loopback ports, their own config files, stopped and
deleted at the end. Sentinel declares the primary down after DOWN_AFTER_MS and fails over."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.servers import free_port

MASTER = "viswals-test"
DOWN_AFTER_MS = 1000


class RedisSentinelGroup:
    """`servers` (primary first, then its replica) and `sentinels`, each a redis-server process."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="viswals-redis-", dir="/tmp"))
        self.server_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port(), free_port(), free_port()]
        self.processes: dict[int, subprocess.Popen] = {}

    def _start(self, port: int, lines: list[str], *, sentinel: bool = False) -> None:
        directory = self.base / str(port)
        directory.mkdir(exist_ok=True)
        config = directory / "redis.conf"
        common = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {directory}",
            f"logfile {directory / 'redis.log'}",
            "daemonize no",
        ]
        if not sentinel:
            common += ['save ""', "appendonly no"]
        config.write_text("\n".join(common + lines) + "\n")
        argv = ["redis-server", str(config), *(["--sentinel"] if sentinel else [])]
        self.processes[port] = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(lambda: _answers(port), f"redis on {port}")

    def start(self) -> None:
        primary, replica = self.server_ports
        self._start(primary, [])
        self._start(replica, [f"replicaof 127.0.0.1 {primary}"])
        for port in self.sentinel_ports:
            self._start(
                port,
                [
                    f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2",
                    f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {MASTER} 10000",
                    f"sentinel parallel-syncs {MASTER} 1",
                ],
                sentinel=True,
            )
        _wait(lambda: self._replica_known(), "the Sentinels to see the replica", timeout=30)

    def _replica_known(self) -> bool:
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=1)
        try:
            return bool(client.sentinel_slaves(MASTER))
        except redis.RedisError:
            return False
        finally:
            client.close()

    @property
    def env(self) -> dict[str, str]:
        """The settings of a process using this group (REDIS_URL gives the database number)."""
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports),
            "REDIS_SENTINEL_MASTER": MASTER,
            "REDIS_URL": "redis://127.0.0.1:1/0",  # the host is ignored with Sentinel
        }

    def primary_port(self) -> int:
        """The primary's port as the first Sentinel that answers names it."""
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                return int(client.sentinel_get_master_addr_by_name(MASTER)[1])
            except (redis.RedisError, TypeError):
                continue
            finally:
                client.close()
        raise RuntimeError("no Sentinel answers")

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def kill_primary(self) -> int:
        """SIGKILL the primary (no goodbye to anyone); return its port."""
        port = self.primary_port()
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait()
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 30) -> int:
        """Wait until the Sentinels name another primary and it answers as one; its port."""

        def promoted() -> bool:
            port = self.primary_port()
            if port == old_port:
                return False
            try:
                return self.client(port).execute_command("ROLE")[0] == "master"
            except redis.RedisError:
                return False

        _wait(promoted, "a failover", timeout=timeout)
        return self.primary_port()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def _answers(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait(check, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
