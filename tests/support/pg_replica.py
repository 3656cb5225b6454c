"""A real streaming replica of an embedded PostgreSQL: ``pg_basebackup -R``, then a hot standby on a free port.

The machine's test server accepts no replication connection, so the primary is an
:class:`~perseus_cli.devstack.postgres.EmbeddedPostgres` (``private_postgres``), whose ``initdb --auth=trust``
cluster allows them from loopback. Both run as the same user (the service user when we are root, as
PostgreSQL refuses root), with the primary's binaries.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg

from perseus_cli.devstack.pg_install import PgInstall
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.service_user import SERVICE_USER, ServiceUser
from tests.support.processes import free_port

START_TIMEOUT_S = 60.0


def _binaries(primary: EmbeddedPostgres) -> Path:
    private = primary.dir / "install" / "bin"
    return private if private.exists() else PgInstall.bundled().bin_dir


def _spawn(primary: EmbeddedPostgres) -> tuple[subprocess.Popen[bytes], int, IO[bytes]]:
    """pg_basebackup the primary into a directory beside its data, then start the standby on a free port."""
    user = ServiceUser.lookup(SERVICE_USER) if os.geteuid() == 0 else None
    as_user = user.popen_kwargs() if user else {}
    bin_dir = _binaries(primary)
    target = primary.dir / f"replica-{os.getpid()}-{time.monotonic_ns()}"
    target.mkdir(mode=0o700)  # empty, the user's: pg_basebackup fills it, and PostgreSQL wants 0700
    if user is not None:
        os.chown(target, user.uid, user.gid)
    backup = subprocess.run(
        [str(bin_dir / "pg_basebackup"), "-d", primary.url, "-D", str(target), "-X", "stream", "-R", "-c", "fast"],
        check=False,
        timeout=START_TIMEOUT_S,
        capture_output=True,
        **as_user,
    )
    if backup.returncode != 0:
        raise RuntimeError(f"pg_basebackup failed: {backup.stderr.decode(errors='replace').strip()}")
    port = free_port()
    log = open(primary.dir / f"{target.name}.log", "ab")
    proc = subprocess.Popen(
        [
            str(bin_dir / "postgres"),
            "-D",
            str(target),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={port}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "hot_standby=on",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        **as_user,
    )
    return proc, port, log


def _stop(proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # fast shutdown
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


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
    proc, port, log = await asyncio.to_thread(_spawn, primary)
    url = f"postgresql://{EmbeddedPostgres.USER}@127.0.0.1:{port}/{EmbeddedPostgres.DATABASE}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                conn = await asyncpg.connect(url, timeout=2)
            except (OSError, asyncpg.PostgresError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
                continue
            try:
                assert await conn.fetchval("SELECT pg_is_in_recovery()"), "the copy is not a standby"
            finally:
                await conn.close()
            break
        yield Replica(url, proc.pid)
    finally:
        await asyncio.to_thread(_stop, proc, log)
