"""A streaming read replica of the embedded PostgreSQL: ``pg_basebackup -R``, then a hot standby.

``perseus up --cluster`` starts one beside the embedded primary and hands its URL to the cores as
``PERSEUS_DATABASE_READ_URL``; the tests make theirs with it too (``tests/support/pg_replica.py``).
It works because the embedded primary takes replication connections from loopback with its generated
password (the machine's own PostgreSQL may not): ``pg_basebackup`` is given the primary's URL, password
included, and ``-R`` writes it into the standby's ``primary_conninfo`` (in ``pgdata``, private to the
server's user). The copy has the primary's ``pg_hba.conf`` and roles, so the standby asks for the same
password; its URL carries it.

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

from common.settings import redact_url
from perseus_cli.devstack.pg_install import PgInstall
from perseus_cli.devstack.postgres import EmbeddedPostgres

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

    @property
    def password(self) -> str | None:
        """The primary's: the standby is a copy of its roles."""
        return self.primary.password

    def _argv(self, port: int) -> list[str]:
        return [*super()._argv(port), "-c", "hot_standby=on"]

    def _prepare(self) -> None:
        self._prepare_dir()
        self._install = self._usable_install(self.primary.install or PgInstall.bundled())
        self._basebackup()

    def _basebackup(self) -> None:
        """Copy the running primary (as a standby: ``-R``) into a staging directory, renamed when complete."""
        assert self._install is not None
        install = self._install
        primary_url = self.primary.url  # raises when the primary is not running: a replica of nothing
        shutil.rmtree(self.pgdata, ignore_errors=True)  # a replica is copied afresh at every start
        self._build_pgdata(
            lambda staging: [
                str(install.bin_dir / "pg_basebackup"),
                "-d",
                primary_url,
                "-D",
                str(staging),
                "-X",
                "stream",  # the WAL written during the copy comes along: the copy is consistent by itself
                "-R",  # standby.signal and primary_conninfo: it starts as a standby of the primary
                "-c",
                "fast",  # checkpoint now rather than at the primary's leisure
            ],
            tool="pg_basebackup",
            what=f"copying the primary ({redact_url(primary_url)})",
            timeout_s=BASEBACKUP_TIMEOUT_S,
        )
