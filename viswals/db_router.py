"""PostgreSQL read replicas: the database router, the choice of a replica for a read that may
be a moment stale, and each replica's health as this process last saw it.

The router sends everything to the primary (`default`): every write, every read Django makes
on its own, every migration. A read goes to a replica only where its code asks for one with
`.using(replica_alias(...))` — the few reads chosen to tolerate staleness (the user list and
search, the admin's changelist, the live page's first rows). A router that guessed from the
query would also send reads that must see a write (a service's, a cache fill's) to a replica.

A replica serves reads only while it is `ok`: it answers, and it is behind the primary by at
most DATABASE_REPLICA_MAX_LAG_SECONDS. Lag is 0 when the replica has replayed all the WAL the
primary had written just before the replica was asked; otherwise it is the age of the last
transaction the replica replayed (`now() - pg_last_xact_replay_timestamp()`, so the two hosts'
clocks must agree). After a quiet spell that age is large while the replica is only a few
milliseconds behind the first new write: such a replica is skipped until the next check, one
second later. A check runs at most once per REPLICA_CHECK_SECONDS per process, in a thread
of its own, so no read ever waits for one; until a process's first check has finished it reads
from the primary. Each change of a replica's state is logged once.

Read-your-writes (users.consistency) passes `min_lsn`: the WAL position an account's last write
committed at. A replica qualifies only if its replay position, as of the last check, is at
least that; replay positions only grow, so a replica that had replayed it then has it now.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError

logger = logging.getLogger(__name__)

T = TypeVar("T")

PRIMARY = "default"
REPLICA_PREFIX = "replica_"
# Seconds between two checks of the replicas' health in one process.
REPLICA_CHECK_SECONDS = 1.0
# A check's own bounds: libpq's smallest connect timeout, and the statement's.
_CONNECT_TIMEOUT = 2
_STATEMENT_TIMEOUT_MS = 500

OK, LAGGING, DOWN, UNKNOWN = "ok", "lagging", "down", "unknown"

# WAL positions as byte offsets (pg_lsn minus 0/0), comparable as integers.
# How far the primary has written (the health check's "caught up" test).
_PRIMARY_SQL = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
# A write's position for read-your-writes: the insert position, not the write position. With
# synchronous_commit off a commit returns while its record is still in the WAL buffers, past
# the write position, and a replica that replayed only up to there lacks the commit.
_PRIMARY_INSERT_SQL = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
_REPLICA_SQL = """
SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
       pg_is_in_recovery()
"""


class PrimaryRouter:
    """Every read and write to the primary; migrations only there. Replicas are read only
    through an explicit `.using(replica_alias())`."""

    def db_for_read(self, model, **hints):
        return PRIMARY

    def db_for_write(self, model, **hints):
        return PRIMARY

    def allow_relation(self, obj1, obj2, **hints):
        return True  # replicas hold the primary's data: objects read from either may relate

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == PRIMARY


def replica_aliases() -> list[str]:
    """The configured replicas' database aliases (settings.DATABASE_REPLICA_URLS)."""
    return [alias for alias in settings.DATABASES if alias.startswith(REPLICA_PREFIX)]


@dataclass(frozen=True)
class ReplicaState:
    status: str  # ok, lagging, down, unknown (not checked yet)
    replay_lsn: int = -1  # WAL replayed, as of checked_at
    lag_seconds: float | None = None
    checked_at: float = 0.0  # time.monotonic()


class _Replicas:
    """This process's view of its replicas, refreshed by one thread at a time."""

    def __init__(self) -> None:
        self.states: dict[str, ReplicaState] = {}
        self.checked_at = 0.0  # start of the last check (0: never)
        self.refreshing = threading.Lock()
        self.connections: dict[str, object] = {}  # alias -> psycopg connection for checks
        self.errors: dict[str, str] = {}  # alias -> why its last check failed
        # Held while a state changes, so the health check and a failed read that both see a
        # replica go down log it once.
        self.changing = threading.Lock()

    def stale(self) -> bool:
        return time.monotonic() - self.checked_at >= REPLICA_CHECK_SECONDS

    def refresh_soon(self) -> None:
        """Start a check in the background unless one runs; the caller does not wait."""
        if self.refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh_locked, name="db-replicas", daemon=True).start()

    def refresh(self) -> None:
        """Check now (waiting for a check already running instead of starting another)."""
        with self.refreshing:
            if self.stale():
                self._check()

    def _refresh_locked(self) -> None:
        try:
            self._check()
        finally:
            self.refreshing.release()

    def _check(self) -> None:
        started = time.monotonic()
        aliases = replica_aliases()
        try:
            primary_lsn = self._query(PRIMARY, _PRIMARY_SQL)[0]
        except Exception as error:  # the primary's outage is /readyz's business, not ours
            logger.debug("replicas: primary position unknown: %s", _describe(error))
            primary_lsn = None
        states = {}
        for alias in aliases:
            states[alias] = self._check_one(alias, primary_lsn, started)
        with self.changing:
            for alias, state in states.items():
                before = self.states.get(alias)
                if before is None or before.status != state.status:
                    _log_change(alias, before, state, self.errors.get(alias, "?"))
            self.states, self.checked_at = states, started

    def _check_one(self, alias: str, primary_lsn: int | None, started: float) -> ReplicaState:
        try:
            replay_lsn, age, in_recovery = self._query(alias, _REPLICA_SQL)
        except Exception as error:
            self.errors[alias] = _describe(error)
            return ReplicaState(DOWN, checked_at=started)
        if not in_recovery or replay_lsn is None:  # promoted, or not a streaming standby
            self.errors[alias] = "not a standby in recovery"
            return ReplicaState(DOWN, checked_at=started)
        if primary_lsn is not None and replay_lsn >= primary_lsn:
            lag = 0.0
        else:
            lag = max(age, 0.0) if age is not None else float("inf")
        status = OK if lag <= settings.DATABASE_REPLICA_MAX_LAG_SECONDS else LAGGING
        return ReplicaState(status, replay_lsn, lag, started)

    def _query(self, alias: str, sql: str) -> tuple:
        import psycopg

        connection = self.connections.get(alias)
        if connection is None or connection.closed:
            connection = self.connections[alias] = psycopg.connect(
                **_connect_kwargs(settings.DATABASES[alias]), autocommit=True
            )
        try:
            return connection.execute(sql).fetchone()
        except Exception:
            connection.close()
            raise

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        self.connections.clear()


def _connect_kwargs(db: dict) -> dict:
    # TLS, and with a multi-host URL target_session_attrs: without it a check could pass
    # against a standby when it is the first host that answers.
    tls = {
        k: v
        for k, v in db.get("OPTIONS", {}).items()
        if k.startswith("ssl") or k == "target_session_attrs"
    }
    return {
        "host": db.get("HOST") or "127.0.0.1",
        "port": db.get("PORT") or 5432,
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "dbname": db["NAME"],
        "connect_timeout": _CONNECT_TIMEOUT,
        "options": f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}",
        "application_name": "viswals-replica-check",
        **tls,
    }


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def _log_change(alias: str, before: ReplicaState | None, state: ReplicaState, error: str) -> None:
    was = before.status if before else UNKNOWN
    if state.status == OK:
        if was != UNKNOWN:  # a replica found healthy at start-up is no news
            logger.info("replica %s: %s -> ok; reads go to it again", alias, was)
    elif state.status == LAGGING:
        logger.warning(
            "replica %s: %s -> lagging (%.1fs behind, limit %ss); its reads go to the primary",
            alias, was, state.lag_seconds, settings.DATABASE_REPLICA_MAX_LAG_SECONDS,
        )  # fmt: skip
    else:
        logger.warning(
            "replica %s: %s -> down (%s); its reads go to the primary",
            alias, was, error,
        )  # fmt: skip


_replicas = _Replicas()


def _forget_after_fork() -> None:
    # A forked child (a Celery prefork worker) must not share the parent's check connections,
    # nor wait on a lock a parent thread held at the fork.
    global _replicas
    _replicas = _Replicas()


os.register_at_fork(after_in_child=_forget_after_fork)


def replica_states(*, refresh: bool = False) -> dict[str, ReplicaState]:
    """Each configured replica's state as this process last saw it (checking now first when
    `refresh` and the last check is older than REPLICA_CHECK_SECONDS: for /readyz)."""
    aliases = replica_aliases()
    if not aliases:
        return {}
    if refresh and _replicas.stale():
        _replicas.refresh()
    return {alias: _replicas.states.get(alias, ReplicaState(UNKNOWN)) for alias in aliases}


def replica_alias(*, min_lsn: int | None = None) -> str:
    """The database alias for a read that may be a moment stale: a healthy replica (one that
    has replayed `min_lsn`, when given), else the primary. Never waits for a health check."""
    if len(settings.DATABASES) == 1:  # no replicas configured: nothing to choose
        return PRIMARY
    if _replicas.stale():
        _replicas.refresh_soon()
    usable = [
        alias
        for alias, state in _replicas.states.items()
        if state.status == OK and (min_lsn is None or state.replay_lsn >= min_lsn)
    ]
    if not usable:
        return PRIMARY
    return usable[0] if len(usable) == 1 else random.choice(usable)


def replica_failed(alias: str, error: BaseException) -> None:
    """A read on `alias` failed: take the replica out of use until its next good check."""
    replicas = _replicas
    with replicas.changing:
        before = replicas.states.get(alias)
        if before is None or before.status == DOWN:
            return
        replicas.errors[alias] = _describe(error)
        state = ReplicaState(DOWN, checked_at=time.monotonic())
        replicas.states = {**replicas.states, alias: state}
        _log_change(alias, before, state, replicas.errors[alias])


def read_with_fallback(read: Callable[[str], T], alias: str) -> T:
    """`read(alias)`; when `alias` is a replica and the read fails (it died since its last
    check, or cancelled the query for a conflict with recovery), `read(PRIMARY)` instead, so
    a replica's trouble never reaches a client as an error."""
    if alias == PRIMARY:
        return read(alias)
    try:
        return read(alias)
    except DatabaseError as error:
        replica_failed(alias, error)
        return read(PRIMARY)


def primary_wal_lsn() -> int:
    """The primary's current WAL insert position (a byte offset), through Django's connection:
    after a commit, a position at or past the end of that commit's record."""
    from django.db import connections

    with connections[PRIMARY].cursor() as cursor:
        cursor.execute(_PRIMARY_INSERT_SQL)
        return cursor.fetchone()[0]


# --- /metrics -------------------------------------------------------------------------------


class ReplicaCollector:
    """`db_replica_up` and `db_replica_lag_seconds` per replica, as the scraped process sees
    them (settings.METRICS_COLLECTORS)."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        states = replica_states(refresh=True)
        up = GaugeMetricFamily(
            "db_replica_up",
            "1 while a read replica serves reads (answers, within the lag limit), else 0.",
            labels=["replica", "state"],
        )
        lag = GaugeMetricFamily(
            "db_replica_lag_seconds",
            "How far a read replica is behind the primary (NaN: unknown, e.g. down).",
            labels=["replica"],
        )
        for alias, state in states.items():
            up.add_metric([alias, state.status], 1.0 if state.status == OK else 0.0)
            lag.add_metric(
                [alias], state.lag_seconds if state.lag_seconds is not None else float("nan")
            )
        yield up
        yield lag
