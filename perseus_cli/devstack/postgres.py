"""Embedded PostgreSQL 16: a private cluster under ``<data_dir>/postgres``, so a fresh machine needs only Python.

``perseus up`` and CI (``python -m perseus_cli.devstack``) use it when ``PERSEUS_DATABASE_URL`` is unset.
The binaries come from the ``pgserver`` wheel (:mod:`perseus_cli.devstack.pg_install`); the lifecycle is
:class:`~perseus_cli.devstack.server.EmbeddedServer`'s. Under ``<data_dir>/postgres``::

    pgdata/         the cluster (initdb runs once; owned by the PostgreSQL user)
    postgres.log    server output, appended; initdb.log beside it
    install/        a private copy of the binaries, only when root needs one

The application database is the cluster's own ``postgres`` database, user ``postgres``, trust auth
(the cluster is private to this data directory, so a separate database buys nothing). As root,
PostgreSQL runs as an unprivileged user instead (:mod:`perseus_cli.devstack.service_user`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.settings import StartupError
from perseus_cli.devstack.pg_install import PgInstall
from perseus_cli.devstack.processes import HOST, child_preexec, error_line, open_log, read_from, server_env
from perseus_cli.devstack.server import EmbeddedServer
from perseus_cli.devstack.service_user import SERVICE_USER, ServiceUser, chown_tree, open_data_dir

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedPostgres"]

INITDB_TIMEOUT_S = 120.0


class EmbeddedPostgres(EmbeddedServer):
    """A private PostgreSQL 16 cluster under ``<data_dir>/postgres``; ``url`` is asyncpg-ready.

    ``install`` overrides the bundled binaries.
    """

    kind = "PostgreSQL"
    subdir = "postgres"
    graceful_signal = signal.SIGINT  # "fast" shutdown: disconnect clients, checkpoint, exit
    bind_failures = ("could not bind", "Address already in use", "could not create any TCP/IP sockets")
    USER = "postgres"
    DATABASE = "postgres"

    def __init__(
        self, data_dir: str | os.PathLike[str], *, install: PgInstall | None = None, detached: bool = False
    ) -> None:
        super().__init__(data_dir, detached=detached)
        self.pgdata = self.dir / "pgdata"
        self._install = install
        self._user: ServiceUser | None = None

    @property
    def install(self) -> PgInstall | None:
        """The binaries it runs (a private copy when root needs one); None before the first start."""
        return self._install

    def _url(self, port: int) -> str:
        return f"postgresql://{self.USER}@{HOST}:{port}/{self.DATABASE}"

    def _spawn_kwargs(self) -> dict[str, Any]:
        return self._user.popen_kwargs() if self._user else {}

    def _argv(self, port: int) -> list[str]:
        assert self._install is not None  # set by _prepare
        return [
            str(self._install.postgres),
            "-D",
            str(self.pgdata),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"port={port}",
            "-c",
            "unix_socket_directories=",
        ]

    def _ready(self, pid: int, port: int) -> bool:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8
            and lines[0].strip() == str(pid)
            and lines[3].strip() == str(port)
            and (lines[7].strip() == "ready")
        )

    # ---- preparation: directories, permissions, binaries, initdb

    def _prepare(self) -> None:
        self._prepare_dir()
        self._install = self._usable_install(self._install or PgInstall.bundled())
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        elif self._user is not None:
            chown_tree(self.pgdata, self._user)
        logger.info("embedded PostgreSQL data in %s", self.pgdata)

    def _prepare_dir(self) -> None:
        """Create ``<data_dir>/<subdir>``, private, or reachable by the service user when we are root."""
        self._user = ServiceUser.lookup(SERVICE_USER) if os.geteuid() == 0 else None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(exist_ok=True)
        if self._user is None:
            self.dir.chmod(0o700)
        else:
            open_data_dir(self._user, self.data_dir, self.dir)

    def _usable_install(self, install: PgInstall) -> PgInstall:
        if not install.postgres.exists():
            raise StartupError(f"embedded PostgreSQL: {install.postgres} is missing; reinstall pgserver")
        if self._user is None or install.usable_by(self._user):
            return install
        copy = install.private_copy(self.dir / "install")
        if not copy.usable_by(self._user):
            raise StartupError(f"embedded PostgreSQL: user {self._user.name!r} cannot run the binaries in {copy.root}")
        return copy

    def _initdb(self) -> None:
        """Initialise a new cluster (into a staging directory, renamed when complete)."""
        assert self._install is not None
        install = self._install
        self._build_pgdata(
            lambda staging: [
                str(install.initdb),
                "-D",
                str(staging),
                "-U",
                self.USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            tool="initdb",
            what="initialising a new cluster",
            timeout_s=INITDB_TIMEOUT_S,
        )

    def _build_pgdata(self, argv_of: Callable[[Path], list[str]], *, tool: str, what: str, timeout_s: float) -> None:
        """Run ``tool`` (``initdb``, ``pg_basebackup``) into ``pgdata.init`` and rename it ``pgdata``, so a
        failed run never leaves half a cluster; its output goes to ``<tool>.log``, its last error line into
        the StartupError."""
        staging = self.dir / "pgdata.init"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        if self._user is not None:
            os.chown(staging, self._user.uid, self._user.gid)
        log, label = self.dir / f"{tool}.log", f"embedded {self.kind}"
        fd, offset = open_log(log)
        logger.info("%s: %s in %s", label, what, self.pgdata)
        try:
            result = subprocess.run(
                argv_of(staging),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env=server_env(),
                timeout=timeout_s,
                check=False,
                start_new_session=True,
                preexec_fn=child_preexec(signal.SIGKILL),
                **self._spawn_kwargs(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise StartupError(f"{label}: {tool} failed ({exc}; log {log})") from exc
        finally:
            os.close(fd)
        if result.returncode != 0:
            raise StartupError(
                f"{label}: {tool} failed with code {result.returncode}: "
                f"{error_line(read_from(log, offset))} (log {log})"
            )
        staging.rename(self.pgdata)
