"""What one index of the users table costs each inserted row.

For each index named (the model's, rendered as migrations create them, plus `--extra` ones
given as SQL column lists), it copies the users of an existing database (one that
bench_search.py kept, say) into an unlogged table of the same columns that carries that index
alone, `INSERT … SELECT` of every row, `--repeat` times, and prints the best time against the
same insert into a table with no index: the index's own cost per row, in microseconds.

Usage:
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/viswals_search500000 \\
        python bench/index_insert_cost.py [--repeat 3] [--only NAME ...] \\
        [--extra 'name=(created_at)' ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "viswals.settings")

SCRATCH = "bench_index_insert_cost"


def timed_insert(cursor, create_index: str | None, repeat: int) -> list[float]:
    """Seconds to insert every user into a fresh unlogged table carrying `create_index` (a
    CREATE INDEX on the scratch table) or no index, `repeat` times, fastest first."""
    times = []
    for _ in range(repeat):
        cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
        cursor.execute(f"CREATE UNLOGGED TABLE {SCRATCH} (LIKE users_user INCLUDING DEFAULTS)")
        if create_index:
            cursor.execute(create_index)
        started = time.perf_counter()
        cursor.execute(f"INSERT INTO {SCRATCH} SELECT * FROM users_user")
        times.append(time.perf_counter() - started)
    cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
    return sorted(times)


def span(times: list[float]) -> str:
    return f"{times[0] * 1000:.0f}-{times[-1] * 1000:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=(COLUMNS) [WHERE …]",
        help="an index not declared by the model, to compare",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection

    from ingest.indexes import declared_indexes

    indexes = {
        index.name: index.create_sql.replace('ON "users_user"', f"ON {SCRATCH}").replace(
            f'INDEX "{index.name}"', f'INDEX "{index.name}_cost"'
        )
        for index in declared_indexes()
        if not args.only or index.name in args.only
    }
    for extra in args.extra:
        name, _, definition = extra.partition("=")
        indexes[name] = f'CREATE INDEX "{name}_cost" ON {SCRATCH} {definition}'
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM users_user")
        rows = cursor.fetchone()[0]
        cursor.execute("SET max_parallel_maintenance_workers = 0")
        none = timed_insert(cursor, None, args.repeat)
        print(f"{rows:,} users, {args.repeat} inserts each; no index: {span(none)} ms")
        for name, sql in indexes.items():
            times = timed_insert(cursor, sql, args.repeat)
            # The index's own cost: best against best, worst against worst.
            low, high = ((times[n] - none[n]) / rows * 1e6 for n in (0, -1))
            print(f"{name:<36} {span(times):>13} ms  {low:5.2f}-{high:5.2f} µs per row", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
