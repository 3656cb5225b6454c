"""A real streaming replica of an embedded PostgreSQL, for tests: ``perseus up --cluster``'s own replica code.

The machine's test server accepts no replication connection, so the primary is an
:class:`~perseus_cli.devstack.postgres.EmbeddedPostgres` (``private_postgres``), whose ``initdb --auth=trust``
cluster allows them from loopback. The standby is an :class:`~perseus_cli.devstack.pg_replica.EmbeddedReplica`
in a directory of its own under the primary's data directory (a test may make several), stopped by PID and
removed after use.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from perseus_cli.devstack.pg_replica import EmbeddedReplica
from perseus_cli.devstack.postgres import EmbeddedPostgres


@dataclass(frozen=True)
class Replica:
    url: str
    pid: int  # of the standby's postmaster

    def processes(self) -> list[int]:
        """The postmaster and its children, from /proc (each backend leads a process group of its own)."""
        found = [self.pid]
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except (OSError, ValueError):
                continue
            if entry.isdigit() and int(stat[stat.rindex(")") + 2 :].split()[1]) == self.pid:
                found.append(int(entry))
        return found


@asynccontextmanager
async def streaming_replica(primary: EmbeddedPostgres) -> AsyncIterator[Replica]:
    """Start a hot standby streaming from ``primary``; it while in use, then it is stopped (by PID)."""
    data_dir = primary.data_dir / f"replica-{os.getpid()}-{time.monotonic_ns()}"
    standby = EmbeddedReplica(primary, data_dir)
    try:
        await asyncio.to_thread(standby.start)
        pid = standby.pid
        assert pid is not None
        conn = await asyncpg.connect(standby.url, timeout=5)
        try:
            assert await conn.fetchval("SELECT pg_is_in_recovery()"), "the copy is not a standby"
        finally:
            await conn.close()
        yield Replica(standby.url, pid)
    finally:
        await asyncio.to_thread(standby.stop)
        shutil.rmtree(data_dir, ignore_errors=True)
