"""A streaming read replica of the embedded PostgreSQL: ``pg_basebackup -R``, then a hot standby.

``perseus up --cluster`` starts one beside the embedded primary and hands its URL to the cores as
``PERSEUS_DATABASE_READ_URL``; the tests make theirs with it too (``tests/support/pg_replica.py``).
It works because the embedded primary's ``initdb --auth=trust`` cluster takes replication connections
from loopback (the machine's own PostgreSQL may not).

The replica is a copy, never a store of its own: every :meth:`~EmbeddedReplica.start` takes a fresh
``pg_basebackup`` of the primary (into ``pgdata.init``, renamed when whole), so a replica left from an
earlier run, of a primary that has since moved on, re-initialised or changed port, is never started.
A restart after a crash (:meth:`~perseus_cli.devstack.server.EmbeddedServer.restart`) keeps its data
and its port, and catches up by streaming, like any standby. It runs as the primary does, with the
primary's binaries (as the service user when we are root) and the lifecycle of
:class:`~perseus_cli.devstack.server.EmbeddedServer`. Under ``<data_dir>/postgres-replica``::

    pgdata/                  the standby (``standby.signal``; ``primary_conninfo`` in ``postgresql.auto.conf``)
    postgres-replica.log     server output, appended; basebackup.log beside it
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess

from core.settings import StartupError
from perseus_cli.devstack.pg_install import PgInstall
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.processes import child_preexec, error_line, open_log, read_from, server_env

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedReplica"]

BASEBACKUP_TIMEOUT_S = 300.0


class EmbeddedReplica(EmbeddedPostgres):
    """A hot standby streaming from a running :class:`EmbeddedPostgres`; ``url`` takes read-only queries.

    ``data_dir`` defaults to the primary's, so the replica lives beside it in ``postgres-replica/``;
    tests that make several give each a directory of its own.
    """

    kind = "PostgreSQL replica"
    subdir = "postgres-replica"

    def __init__(
        self, primary: EmbeddedPostgres, data_dir: str | os.PathLike[str] | None = None, *, detached: bool = False
    ) -> None:
        super().__init__(primary.data_dir if data_dir is None else data_dir, detached=detached)
        self.primary = primary

    def _argv(self, port: int) -> list[str]:
        return [*super()._argv(port), "-c", "hot_standby=on"]

    def _prepare(self) -> None:
        self._prepare_dir()
        self._install = self._usable_install(self.primary.install or PgInstall.bundled())
        self._basebackup()

    def _basebackup(self) -> None:
        """Copy the running primary into ``pgdata.init`` (as a standby: ``-R``) and rename it ``pgdata``."""
        assert self._install is not None
        primary_url = self.primary.url  # raises when the primary is not running: a replica of nothing
        staging = self.dir / "pgdata.init"
        for stale in (staging, self.pgdata):
            shutil.rmtree(stale, ignore_errors=True)
        staging.mkdir(mode=0o700)
        if self._user is not None:
            os.chown(staging, self._user.uid, self._user.gid)
        log = self.dir / "basebackup.log"
        fd, offset = open_log(log)
        argv = [
            str(self._install.bin_dir / "pg_basebackup"),
            "-d",
            primary_url,
            "-D",
            str(staging),
            "-X",
            "stream",  # the WAL written during the copy comes along: the copy is consistent by itself
            "-R",  # standby.signal and primary_conninfo: it starts as a standby of the primary
            "-c",
            "fast",  # checkpoint now rather than at the primary's leisure
        ]
        logger.info("embedded PostgreSQL replica: copying the primary (%s) into %s", primary_url, self.pgdata)
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env=server_env(),
                timeout=BASEBACKUP_TIMEOUT_S,
                check=False,
                start_new_session=True,
                preexec_fn=child_preexec(signal.SIGKILL),
                **self._spawn_kwargs(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise StartupError(f"embedded PostgreSQL replica: pg_basebackup failed ({exc}; log {log})") from exc
        finally:
            os.close(fd)
        if result.returncode != 0:
            raise StartupError(
                f"embedded PostgreSQL replica: pg_basebackup failed with code {result.returncode}: "
                f"{error_line(read_from(log, offset))} (log {log})"
            )
        staging.rename(self.pgdata)
