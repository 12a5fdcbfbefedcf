"""The users table's secondary indexes around a bulk import: which exist, dropping, building.

A big import into an empty or small table loads faster with the primary key alone and the
other indexes built once at the end (PostgreSQL's "Populating a Database", what pg_restore
does): a GIN index built from sorted entries costs half of its row-by-row upkeep, and the
builds run side by side. The indexes are the ones the model declares (field `db_index` and
`Meta.indexes`), rendered by Django's schema editor exactly as a migration creates them: no
second copy of their DDL. Dropping and building happen under one PostgreSQL advisory lock, so
two runs or workers never race on them. Mechanism only: ingest.bulk decides when.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.apps import apps as global_apps
from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction

logger = logging.getLogger(__name__)

# pg_advisory_lock key of "the users table's secondary indexes" (any constant of our own).
LOCK_KEY = 0x75736572_69647873  # b"useridxs"


@dataclass(frozen=True, slots=True)
class DeclaredIndex:
    name: str
    create_sql: str

    @property
    def is_gin(self) -> bool:
        return " USING gin " in self.create_sql


@dataclass(frozen=True, slots=True)
class IndexStatus:
    declared: tuple[str, ...]
    table_exists: bool
    missing: tuple[str, ...]
    invalid: tuple[str, ...]  # present but not usable (a failed CREATE INDEX CONCURRENTLY)

    @property
    def complete(self) -> bool:
        return not self.table_exists or not (self.missing or self.invalid)


def _user_model(apps=None):
    return (apps or global_apps).get_model("users", "User")


def declared_indexes(*, apps=None) -> list[DeclaredIndex]:
    """The users table's indexes other than the primary key, as migrations create them.
    `apps`: a migration state's registry (post_migrate), else the current models."""
    model = _user_model(apps)
    editor = connection.SchemaEditorClass(connection)
    return [
        DeclaredIndex(name=str(statement.parts["name"]).strip('"'), create_sql=str(statement))
        for statement in editor._model_indexes_sql(model)
    ]


def _table(apps=None) -> str:
    return _user_model(apps)._meta.db_table


def _present(table: str) -> dict[str, bool] | None:
    """Index name -> valid, for the table's indexes; None when the table does not exist."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        if not cursor.fetchone()[0]:
            return None
        cursor.execute(
            "SELECT c.relname, i.indisvalid AND i.indisready FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass",
            [table],
        )
        return dict(cursor.fetchall())


def users_indexes_status(*, apps=None) -> IndexStatus:
    """Which of the users table's declared indexes are missing or invalid (health checks)."""
    declared = tuple(index.name for index in declared_indexes(apps=apps))
    present = _present(_table(apps))
    exists = present is not None
    present = present or {}
    return IndexStatus(
        declared=declared,
        table_exists=exists,
        missing=tuple(name for name in declared if name not in present),
        invalid=tuple(name for name in declared if present.get(name) is False),
    )


@contextmanager
def index_lock(*, wait: bool = True) -> Iterator[bool]:
    """Hold the advisory lock of the users indexes on this connection (session level: a
    process that dies releases it). Yields False when `wait` is off and someone holds it."""
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
            locked = True
        else:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
            locked = cursor.fetchone()[0]
    try:
        yield locked
    finally:
        if locked and connection.connection is not None:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
            except DatabaseError:  # the connection is gone: so is its lock
                logger.warning("indexes: could not release the advisory lock", exc_info=True)


def users_indexes_drop(*, lock_timeout_ms: int = 2000) -> bool:
    """Drop the declared secondary indexes (call under index_lock). True when none is left;
    False when the table could not be locked in time (then nothing is dropped)."""
    present = _present(_table()) or {}
    names = [index.name for index in declared_indexes() if index.name in present]
    if not names:
        return True
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            # DROP INDEX locks the table exclusively for a moment: never queue for long (and
            # hold up the readers queued behind us).
            cursor.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            cursor.execute("DROP INDEX IF EXISTS " + ", ".join(f'"{n}"' for n in names))
    except DatabaseError as error:
        logger.warning("indexes: not dropped (%s); loading with them", error)
        return False
    logger.info("indexes: dropped %s for a bulk load", ", ".join(names))
    return True


def users_indexes_build(*, apps=None, parallel: int | None = None) -> list[str]:
    """Create the declared indexes that are missing or invalid, `parallel` at a time, each in
    a session of its own (call under index_lock); return their names.

    Plain CREATE INDEX, not CONCURRENTLY: two concurrent builds of one table would wait for
    each other (CONCURRENTLY takes a self-conflicting lock) and each would scan the table
    twice. Reads go on meanwhile; writes to the table wait for the build (seconds).
    """
    status = users_indexes_status(apps=apps)
    if status.complete:
        return []
    wanted = {*status.missing, *status.invalid}
    todo = sorted(
        (index for index in declared_indexes(apps=apps) if index.name in wanted),
        key=lambda index: not index.is_gin,  # the long builds first
    )
    if status.invalid:
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX IF EXISTS " + ", ".join(f'"{n}"' for n in status.invalid))
    started = time.monotonic()
    queue = list(todo)
    errors: list[BaseException] = []
    mutex = threading.Lock()

    def build_from_queue() -> None:
        try:
            while True:
                with mutex:
                    if not queue or errors:
                        return
                    index = queue.pop(0)
                with connections["default"].cursor() as cursor:
                    cursor.execute(
                        "SELECT set_config('maintenance_work_mem', %s, false)",
                        [settings.INGEST_INDEX_BUILD_MEMORY],
                    )
                    # The builds already run side by side; a b-tree build's own parallel
                    # workers only take CPU from the GIN build beside it, the longest one
                    # (measured: 2.9 -> 2.7 s for all five on 500k users, 2 cores).
                    cursor.execute("SET max_parallel_maintenance_workers = 0")
                    cursor.execute(index.create_sql)
        except BaseException as error:
            with mutex:
                errors.append(error)
        finally:
            connections["default"].close()  # this thread's own connection

    count = max(1, min(parallel or settings.INGEST_INDEX_BUILD_PARALLEL, len(todo)))
    threads = [
        threading.Thread(target=build_from_queue, name=f"index-build-{n}") for n in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    with connection.cursor() as cursor:
        # Fresh statistics (expression indexes included), so searches right after the import
        # get good plans rather than waiting for autovacuum.
        cursor.execute(f'ANALYZE "{_table(apps)}"')
    names = [index.name for index in todo]
    logger.info(
        "indexes: built %s in %.1fs (%d at a time)",
        ", ".join(names),
        time.monotonic() - started,
        count,
    )
    return names
