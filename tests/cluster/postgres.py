"""A PostgreSQL primary and a streaming replica of this test run's own, for the replica tests:
two clusters made with initdb under /tmp/viswals-pg-*, on free loopback ports, run as the
`postgres` OS user when the tests run as root (PostgreSQL refuses to run as root), stopped and
deleted at the end."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.support.servers import free_port

DATABASE = "viswals_cluster"


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian layout), or initdb on the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class PostgresPair:
    """`primary` and `replica` (pg_basebackup -R: a hot standby streaming from the primary)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="viswals-pg-", dir="/tmp"))
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.base, "postgres", "postgres")
        self.primary_port, self.replica_port = free_port(), free_port()
        self.primary_dir, self.replica_dir = self.base / "primary", self.base / "replica"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        self._run("initdb", "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")  # fmt: skip
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.base}'",
            "wal_level = replica",
            "max_wal_senders = 5",
            "hot_standby = on",
            "fsync = off",  # a throwaway cluster: durability is not what these tests check
            "synchronous_commit = off",
            "full_page_writes = off",
            "shared_buffers = 32MB",
            # Which server ran a query is read from its log (logged_statements): a list read runs
            # in a transaction (users.selectors.bounded_read), so pg_stat_activity shows COMMIT.
            "log_statement = 'all'",
        ]
        with open(self.primary_dir / "postgresql.conf", "a") as conf:
            conf.write("\n".join([*settings, f"port = {self.primary_port}"]) + "\n")
        self._pg_ctl(self.primary_dir, "start")
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port),
                  "-U", "postgres", "-D", str(self.replica_dir), "-R", "-X", "stream",
                  "-c", "fast")  # fmt: skip
        with open(self.replica_dir / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.replica_port}\n")
        self.start_replica()
        with psycopg.connect(self.url("postgres", self.primary_port), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def _pg_ctl(self, data: Path, action: str, *options: str) -> None:
        self._run("pg_ctl", "-D", str(data), "-l", str(data.parent / f"{data.name}.log"), "-w",
                  "-t", "30", *options, action)  # fmt: skip

    def start_replica(self) -> None:
        self._pg_ctl(self.replica_dir, "start")

    def stop_replica(self) -> None:
        self._pg_ctl(self.replica_dir, "stop", "-m", "fast")

    def stop(self) -> None:
        for data in (self.replica_dir, self.primary_dir):
            if (data / "postmaster.pid").exists():
                try:
                    self._pg_ctl(data, "stop", "-m", "immediate")
                except subprocess.SubprocessError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)

    @staticmethod
    def url(database: str, port: int) -> str:
        return f"postgres://postgres@127.0.0.1:{port}/{database}"

    @property
    def primary_url(self) -> str:
        return self.url(DATABASE, self.primary_port)

    @property
    def replica_url(self) -> str:
        return self.url(DATABASE, self.replica_port)

    def logged_statements(self, server: str, marker: str) -> list[str]:
        """The lines of `server`'s log ("primary" or "replica") that mention `marker`."""
        log = self.base / f"{server}.log"
        return [line for line in log.read_text(errors="replace").splitlines() if marker in line]

    def cache_namespace(self) -> str:
        """The namespace the pair's database gives cache keys (users.cache.database_namespace)."""
        from users.cache import database_identity

        with self.primary() as connection, connection.cursor() as cursor:
            return database_identity(cursor)

    def primary(self) -> psycopg.Connection:
        return psycopg.connect(self.primary_url, autocommit=True)

    def replica(self) -> psycopg.Connection:
        return psycopg.connect(self.replica_url, autocommit=True)
