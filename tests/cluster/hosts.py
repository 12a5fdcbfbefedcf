"""Hosts for the test across hosts (test_across_hosts.py): network namespaces on a bridge of
their own, each with its own address, and the servers each one runs. Everything is made under
one directory (/tmp/viswals-hosts-*), with names that carry this run's tag, and removed by
`Hosts.stop()`: processes (killed by id, with their process groups), namespaces, veths, the
bridge and the directory. Nothing listens in the root namespace, and no client runs there:
commands run inside a host with `ip netns exec`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.cluster.postgres import postgres_bin

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def _wait(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Hosts:
    """Named hosts on 10.<net>.0.0/24: `run(host, argv)` and `spawn(host, argv)` there."""

    def __init__(self, names: list[str]) -> None:
        self.tag = f"vw{os.getpid() % 100000}"
        self.base = Path(tempfile.mkdtemp(prefix="viswals-hosts-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.subnet = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
        self.address = {name: f"{self.subnet}.{10 + i}" for i, name in enumerate(names)}
        self.netns = {name: f"{self.tag}-{name}" for name in names}
        self.bridge = f"{self.tag}br"
        self.processes: list[subprocess.Popen] = []

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def start(self) -> None:
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("link", "set", self.bridge, "up")
        for i, (name, ns) in enumerate(self.netns.items()):
            self._ip("netns", "add", ns)
            outer, inner = f"{self.tag}v{i}", f"{self.tag}i{i}"
            self._ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            self._ip("link", "set", outer, "master", self.bridge)
            self._ip("link", "set", outer, "up")
            self._ip("link", "set", inner, "netns", ns)
            self._ip("-n", ns, "link", "set", "lo", "up")
            self._ip("-n", ns, "addr", "add", f"{self.address[name]}/24", "dev", inner)
            self._ip("-n", ns, "link", "set", inner, "up")

    def command(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns[host], *argv]

    def run(self, host: str, argv: list[str], *, env=None, timeout: float = 120, check=True):
        return subprocess.run(
            self.command(host, argv), env=env, capture_output=True, text=True,
            timeout=timeout, check=check,
        )  # fmt: skip

    def spawn(self, host: str, argv: list[str], log: Path, *, env=None, cwd=None):
        """A process on `host` in a process group of its own (so it can be killed whole)."""
        with open(log, "ab") as out:
            process = subprocess.Popen(
                self.command(host, argv), env=env, cwd=cwd, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def stop(self) -> None:
        for process in reversed(self.processes):
            self.kill(process, signal.SIGTERM if process.poll() is None else signal.SIGKILL)
        for ns in self.netns.values():
            # Anything still running in the namespace (epmd, a daemonised child) goes too.
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


class HostPostgres:
    """A PostgreSQL primary on one host and a streaming replica (pg_basebackup -R) on another."""

    DATABASE = "viswals_hosts"

    def __init__(self, hosts: Hosts, primary: str, replica: str) -> None:
        self.hosts, self.primary_host, self.replica_host = hosts, primary, replica
        self.bin = postgres_bin()
        self.base = hosts.base / "pg"
        self.base.mkdir()
        shutil.chown(self.base, "postgres", "postgres")
        self.primary_dir, self.replica_dir = self.base / "primary", self.base / "replica"

    def _as_postgres(self, host: str, *argv: str, timeout: float = 90) -> None:
        command = ["runuser", "-u", "postgres", "--", str(self.bin / argv[0]), *argv[1:]]
        self.hosts.run(host, command, timeout=timeout)

    def _pg_ctl(self, host: str, data: Path, action: str, *options: str) -> None:
        log = str(data.parent / f"{data.name}.log")
        self._as_postgres(host, "pg_ctl", "-D", str(data), "-l", log, "-w", "-t", "60", *options,
                          action)  # fmt: skip

    def start(self) -> None:
        self._as_postgres(self.primary_host, "initdb", "-D", str(self.primary_dir),
                          "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
                          "--locale=C.UTF-8")  # fmt: skip
        address = self.hosts.address
        with open(self.primary_dir / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '{address[self.primary_host]}'\n"
                f"unix_socket_directories = '{self.base}'\n"
                "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                "fsync = off\nfull_page_writes = off\nshared_buffers = 64MB\n"
                "max_connections = 200\n"
            )
        with open(self.primary_dir / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.hosts.subnet}.0/24 trust\n")
            hba.write(f"host replication all {self.hosts.subnet}.0/24 trust\n")
        self._pg_ctl(self.primary_host, self.primary_dir, "start")
        self._as_postgres(self.replica_host, "pg_basebackup", "-h", address[self.primary_host],
                          "-U", "postgres", "-D", str(self.replica_dir), "-R", "-X", "stream",
                          "-c", "fast")  # fmt: skip
        socket = self.base / "replica-socket"  # both listen on 5432: not one socket file
        socket.mkdir()
        shutil.chown(socket, "postgres", "postgres")
        with open(self.replica_dir / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '{address[self.replica_host]}'\n")
            conf.write(f"unix_socket_directories = '{socket}'\n")
        self.start_replica()
        with psycopg.connect(host=str(self.base), user="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.DATABASE}")

    def start_replica(self) -> None:
        self._pg_ctl(self.replica_host, self.replica_dir, "start")

    def stop_replica(self) -> None:
        self._pg_ctl(self.replica_host, self.replica_dir, "stop", "-m", "fast")

    def stop(self) -> None:
        for host, data in (
            (self.replica_host, self.replica_dir),
            (self.primary_host, self.primary_dir),
        ):
            if (data / "postmaster.pid").exists():
                try:
                    self._pg_ctl(host, data, "stop", "-m", "immediate")
                except subprocess.SubprocessError:
                    pass

    def url(self, host: str) -> str:
        return f"postgres://postgres@{self.hosts.address[host]}:5432/{self.DATABASE}"


class HostRedis:
    """A Redis primary and replica on two hosts, and a Sentinel on each of three hosts."""

    MASTER = "viswals-hosts"

    def __init__(self, hosts: Hosts, servers: list[str], sentinels: list[str]) -> None:
        self.hosts, self.servers, self.sentinels = hosts, servers, sentinels
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, host: str, role: str, port: int, lines: list[str], sentinel=False) -> None:
        directory = self.hosts.base / f"redis-{role}-{host}"
        directory.mkdir()
        address = self.hosts.address[host]
        config = directory / "redis.conf"
        config.write_text("\n".join([f"port {port}", f"bind {address}", f"dir {directory}",
                                     f"logfile {directory / 'log'}", "daemonize no",
                                     # No password on the test's own hosts: served to them.
                                     "protected-mode no",
                                     *([] if sentinel else ['save ""', "appendonly no"]),
                                     *lines]) + "\n")  # fmt: skip
        argv = ["redis-server", str(config), *(["--sentinel"] if sentinel else [])]
        self.processes[f"{role}-{host}"] = self.hosts.spawn(host, argv, directory / "out")

    def start(self) -> None:
        primary, replica = self.servers
        address = self.hosts.address
        self._start(primary, "server", 6379, [])
        self._start(replica, "server", 6379, [f"replicaof {address[primary]} 6379"])
        for host in self.sentinels:
            self._start(host, "sentinel", 26379, [
                f"sentinel monitor {self.MASTER} {address[primary]} 6379 2",
                f"sentinel down-after-milliseconds {self.MASTER} 1000",
                f"sentinel failover-timeout {self.MASTER} 10000",
            ], sentinel=True)  # fmt: skip

    def kill_primary(self) -> str:
        """SIGKILL the Redis primary; the host it was on."""
        host = self.servers[0]
        Hosts.kill(self.processes[f"server-{host}"])
        return host

    def sentinel_setting(self) -> str:
        return ",".join(f"{self.hosts.address[host]}:26379" for host in self.sentinels)


class HostRabbit:
    """Three RabbitMQ nodes, one per host, clustered (own names, config and env files, cookie,
    net_ticktime = 10, pause_minority); quorum queues need the majority."""

    def __init__(self, hosts: Hosts, nodes: list[str]) -> None:
        self.hosts, self.nodes = hosts, nodes
        self.base = hosts.base / "rabbit"
        self.base.mkdir()
        home = self.base / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(hosts.tag + "-" + os.urandom(8).hex())
        cookie.chmod(0o400)
        (self.base / "env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].")
        (self.base / "advanced.config").write_text("[{kernel, [{net_ticktime, 10}]}].")
        self.names = [f"{hosts.tag}@{hosts.address[host]}" for host in nodes]
        peers = "\n".join(
            f"cluster_formation.classic_config.nodes.{i + 1} = {name}"
            for i, name in enumerate(self.names)
        )
        for host in nodes:
            node = self.base / host
            node.mkdir()
            (node / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = {hosts.address[host]}:5672\n"
                "cluster_partition_handling = pause_minority\n"
                "cluster_formation.peer_discovery_backend = classic_config\n"
                "loopback_users = none\n"  # guest from the other hosts (a test's own cluster)
                f"{peers}\n"
            )
        self.processes: dict[str, subprocess.Popen] = {}

    def env(self, host: str) -> dict[str, str]:
        node, address = self.base / host, self.hosts.address[host]
        erlang_address = "{" + address.replace(".", ",") + "}"
        return {
            **os.environ,
            "HOME": str(self.base / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "env.conf"),
            "RABBITMQ_USE_LONGNAME": "true",
            "RABBITMQ_NODENAME": self.names[self.nodes.index(host)],
            "RABBITMQ_NODE_IP_ADDRESS": address,
            "RABBITMQ_NODE_PORT": "5672",
            "RABBITMQ_MNESIA_BASE": str(node / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node / "log"),
            "RABBITMQ_CONFIG_FILE": str(node / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(node / "pid"),
            "ERL_EPMD_ADDRESS": address,
            "ERL_FLAGS": f"-kernel inet_dist_use_interface {erlang_address}",
        }

    def ctl(self, host: str, *args: str, timeout: float = 30):
        name = self.names[self.nodes.index(host)]
        argv = [str(RABBIT_BIN / "rabbitmqctl"), "-l", "-n", name, "-q", *args]
        return self.hosts.run(host, argv, env=self.env(host), timeout=timeout, check=False)

    def start_node(self, host: str) -> None:
        self.processes[host] = self.hosts.spawn(
            host,
            [str(RABBIT_BIN / "rabbitmq-server")],
            self.base / f"{host}.out",
            env=self.env(host),
        )

    def await_node(self, host: str, timeout: float = 120) -> None:
        _wait(lambda: self.ctl(host, "await_startup", "--timeout", "5", timeout=15).returncode == 0,
              f"RabbitMQ on {host}", timeout=timeout)  # fmt: skip

    def start(self) -> None:
        for host in self.nodes:
            self.start_node(host)
        for host in self.nodes:
            self.await_node(host)

    def stop_node(self, host: str) -> None:
        self.ctl(host, "stop", timeout=60)
        Hosts.kill(self.processes[host], signal.SIGTERM)

    def url(self, host: str) -> str:
        return f"amqp://guest:guest@{self.hosts.address[host]}:5672//"
