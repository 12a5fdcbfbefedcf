#!/bin/sh
# Run once by the postgres image on the primary's first start (docker-entrypoint-initdb.d, in
# docker-compose.replicated.yml): a role the replica streams as, and its pg_hba line.
set -eu
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
  -c "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '$REPLICATION_PASSWORD'"
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
