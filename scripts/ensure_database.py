"""Create the PostgreSQL database named in DATABASE_URL if it does not exist yet."""

import os
import sys

import environ
import psycopg
from psycopg import sql

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/viswals"


def main() -> int:
    environ.Env.read_env(os.path.join(os.path.dirname(__file__), "..", ".env"))
    config = environ.Env.db_url_config(os.environ.get("DATABASE_URL", DEFAULT_URL))
    name = config["NAME"]
    with psycopg.connect(
        host=config.get("HOST") or "127.0.0.1",
        port=config.get("PORT") or 5432,
        user=config.get("USER") or "postgres",
        password=config.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    ) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if exists.fetchone():
            return 0
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
