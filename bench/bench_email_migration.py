"""The migration that encrypts an existing plaintext users table (users 0007-0009), and its way
back, on a table of generated users.

In a scratch database migrated to users 0006 (addresses in plaintext, as before encryption), it
loads --rows users (data/generate_users.py, by `\\copy` + INSERT … SELECT, the plaintext
indexes in place), then times `manage.py migrate users` forward (every address encrypted in
batches, the blind indexes built), checks that no plaintext address is left and that searches
answer, and times `manage.py migrate users 0006` back (every address decrypted), checking the
addresses are those of the file again. Prints seconds and users/s of each direction.

Usage: python bench/bench_email_migration.py [--rows 500000]
"""

from __future__ import annotations

import argparse
import csv
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scratch import Scratch, generate_users  # noqa: E402

LOAD_SQL = """
CREATE TEMP TABLE raw (id text, first_name text, last_name text, email_address text,
                       created_at text, deleted_at text, merged_at text, parent_user_id text);
\\copy raw FROM '{path}' WITH (FORMAT csv, HEADER true)
INSERT INTO users_user (id, first_name, last_name, email_address, created_at)
SELECT DISTINCT ON (id::bigint) id::bigint, left(first_name, 255), left(last_name, 255),
       lower(email_address), to_timestamp(created_at::bigint / 1000.0)
FROM raw
WHERE id ~ '^[0-9]{{1,18}}$' AND created_at ~ '^[0-9]{{1,15}}$' AND email_address LIKE '%@%'
  AND length(email_address) <= 254
ORDER BY id::bigint;
"""


def clean_copy(path: Path, clean: Path) -> None:
    """The file's lines of 8 fields (generated files are dirty on purpose; COPY stops at the
    first bad line, and the rest of the rules are applied in SQL)."""
    with path.open(newline="", errors="replace") as source, clean.open("w", newline="") as out:
        writer = csv.writer(out)
        for fields in csv.reader(source):
            if (
                len(fields) == 8
                and "\ufffd" not in "".join(fields)
                and "\x00" not in "".join(fields)
            ):
                writer.writerow(fields)


def timed(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--data-dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    path = Path(args.data_dir) / f"users-{args.rows}.csv"
    generate_users(args.rows, path)
    clean = Path(args.data_dir) / f"users-{args.rows}-8-fields.csv"
    clean_copy(path, clean)
    scratch = Scratch(f"emailmig{secrets.token_hex(3)}")
    try:
        scratch.psql(f"CREATE DATABASE {scratch.db}", db="postgres")
        scratch.manage("migrate", "--noinput", stdout=subprocess.DEVNULL)
        scratch.manage("migrate", "users", "0006", "--noinput", stdout=subprocess.DEVNULL)
        subprocess.run(
            ["psql", "-q", "-X", "-h", "127.0.0.1", "-U", "postgres", "-d", scratch.db,
             "-v", "ON_ERROR_STOP=1"],
            input=LOAD_SQL.format(path=clean), text=True, check=True, capture_output=True,
        )  # fmt: skip
        users = int(scratch.psql("SELECT count(*) FROM users_user"))
        sample = scratch.psql("SELECT email_address FROM users_user ORDER BY id LIMIT 1")
        scratch.psql("VACUUM ANALYZE users_user")
        print(f"{users:,} users in plaintext (users 0006); first address {sample!r}")

        forward = timed(
            lambda: scratch.manage("migrate", "users", "--noinput", stdout=subprocess.DEVNULL)
        )
        plaintext = int(
            scratch.psql("SELECT count(*) FROM users_user WHERE email_address LIKE '%@%'")
        )
        unindexed = int(scratch.psql("SELECT count(*) FROM users_user WHERE email_digest IS NULL"))
        found = scratch.manage(
            "shell", "--no-imports", "-c",
            "from users.models import User; from users.selectors import user_filter_email_address;"
            f"print(user_filter_email_address(queryset=User.objects.all(), address={sample!r})"
            ".count())",
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        print(
            f"forward (0007-0009, encrypt + blind indexes): {forward:.1f} s, "
            f"{users / forward:,.0f} users/s; plaintext left: {plaintext}, without digest: "
            f"{unindexed}; users found by the first address: {found}"
        )

        back = timed(
            lambda: scratch.manage(
                "migrate", "users", "0006", "--noinput", stdout=subprocess.DEVNULL
            )
        )
        restored = scratch.psql("SELECT email_address FROM users_user ORDER BY id LIMIT 1")
        tokens = int(
            scratch.psql("SELECT count(*) FROM users_user WHERE email_address NOT LIKE '%@%'")
        )
        print(
            f"back (to 0006, decrypt + the trigram index): {back:.1f} s, {users / back:,.0f} "
            f"users/s; first address {restored!r} (same: {restored == sample}); tokens left: "
            f"{tokens}"
        )
    finally:
        scratch.cleanup()


if __name__ == "__main__":
    main()
