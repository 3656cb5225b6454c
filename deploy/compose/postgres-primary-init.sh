#!/bin/sh
# Runs once, when the primary's data directory is created (the image's /docker-entrypoint-initdb.d):
# a role that may stream WAL, and the pg_hba line that lets the replica in with it.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=password="$PERSEUS_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
