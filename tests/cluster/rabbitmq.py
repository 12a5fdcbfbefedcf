"""A three-node RabbitMQ cluster of the tests' own: node names, ports, cookie, data, logs,
configuration and environment file all under /tmp/viswals-rmq-*, loopback only
(`net_ticktime = 10`, `pause_minority`, peer discovery from the node list). Nodes are stopped
with `rabbitmqctl -n <own node>` and the directory deleted at the end; nothing touches the
machine's own RabbitMQ node or /etc/rabbitmq."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.servers import free_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_installed() -> bool:
    return (RABBIT_BIN / "rabbitmq-server").exists()


class RabbitCluster:
    def __init__(self, size: int = 3) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="viswals-rmq-", dir="/tmp"))
        tag = f"{os.getpid()}"
        self.names = [f"viswals-{tag}-{i}@localhost" for i in range(size)]
        self.ports = [free_port() for _ in range(size)]
        self.dist_ports = [free_port() for _ in range(size)]
        self.processes: dict[int, subprocess.Popen] = {}
        home = self.base / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.base / "env.conf").write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf
        (self.base / "enabled_plugins").write_text("[].")
        (self.base / "advanced.config").write_text("[{kernel, [{net_ticktime, 10}]}].")
        peers = "\n".join(
            f"cluster_formation.classic_config.nodes.{i + 1} = {name}"
            for i, name in enumerate(self.names)
        )
        for i in range(size):
            node = self.base / f"node{i}"
            node.mkdir()
            (node / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{self.ports[i]}\n"
                "cluster_partition_handling = pause_minority\n"
                "cluster_formation.peer_discovery_backend = classic_config\n"
                f"{peers}\n"
            )

    def env(self, i: int) -> dict[str, str]:
        node = self.base / f"node{i}"
        return {
            **os.environ,
            "HOME": str(self.base / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "env.conf"),
            "RABBITMQ_NODENAME": self.names[i],
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.ports[i]),
            "RABBITMQ_DIST_PORT": str(self.dist_ports[i]),
            "RABBITMQ_MNESIA_BASE": str(node / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node / "log"),
            "RABBITMQ_CONFIG_FILE": str(node / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(node / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def ctl(self, i: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.names[i], "-q", *args],
            env=self.env(i), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def start_node(self, i: int) -> None:
        with open(self.base / f"node{i}.out", "ab") as out:
            self.processes[i] = subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")], env=self.env(i), stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def await_node(self, i: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not self._started(i):
            if time.monotonic() > deadline or self.processes[i].poll() is not None:
                raise RuntimeError(f"RabbitMQ node {i} did not start:\n{self.log(i)}")
            time.sleep(0.5)

    def _started(self, i: int) -> bool:
        # rabbitmqctl itself can take longer than its own timeout on a loaded machine: ask again.
        try:
            return self.ctl(i, "await_startup", "--timeout", "5", timeout=15).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def running_nodes(self, i: int = 0) -> list[str]:
        result = self.ctl(i, "cluster_status", "--formatter", "json")
        if result.returncode != 0:
            return []
        return sorted(json.loads(result.stdout).get("running_nodes", []))

    def start(self) -> None:
        for i in range(len(self.names)):
            self.start_node(i)
        for i in range(len(self.names)):
            self.await_node(i)
        deadline = time.monotonic() + 60
        while self.running_nodes() != sorted(self.names):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not form: {self.running_nodes()}")
            time.sleep(0.5)

    def stop_node(self, i: int) -> None:
        self.ctl(i, "stop", timeout=60)
        process = self.processes.get(i)
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def stop(self) -> None:
        for i in range(len(self.names)):
            if self.processes.get(i) is not None and self.processes[i].poll() is None:
                self.stop_node(i)
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, i: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.ports[i]}//"

    def urls(self) -> str:
        return ";".join(self.url(i) for i in range(len(self.names)))

    def log(self, i: int) -> str:
        path = self.base / f"node{i}.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
