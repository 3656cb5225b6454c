#!/bin/sh
# The streaming replica: cloned from the primary with pg_basebackup the first time (-R writes
# standby.signal and primary_conninfo; -C -S creates a physical slot, so the primary keeps the WAL the
# replica has not replayed yet), then a hot standby that follows it.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready --host=postgres-primary --username=replicator --dbname=postgres --quiet; do sleep 1; done
    PGPASSWORD="$PERSEUS_REPLICATION_PASSWORD" pg_basebackup --host=postgres-primary --username=replicator \
        --pgdata="$PGDATA" --wal-method=stream --write-recovery-conf --create-slot --slot=replica1 --progress
    chmod 0700 "$PGDATA"
fi
# hot_standby_feedback: a long pg_dump on the replica is not cancelled by the primary vacuuming rows it reads.
exec postgres -c hot_standby=on -c hot_standby_feedback=on
