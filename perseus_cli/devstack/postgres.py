"""Embedded PostgreSQL 16: a private cluster under ``<data_dir>/postgres``, so a fresh machine needs only Python.

``perseus up`` and CI (``python -m perseus_cli.devstack``) use it when ``PERSEUS_DATABASE_URL`` is unset.
The binaries come from the ``pgserver`` wheel (:mod:`perseus_cli.devstack.pg_install`); the lifecycle is
:class:`~perseus_cli.devstack.server.EmbeddedServer`'s. Under ``<data_dir>/postgres``::

    pgdata/         the cluster (initdb runs once; owned by the PostgreSQL user)
    password        the ``postgres`` user's generated password (0600); the URL in server.json carries it
    postgres.log    server output, appended; initdb.log and single-user.log beside it
    install/        a private copy of the binaries, only when root needs one

The application database is the cluster's own ``postgres`` database, user ``postgres`` (the cluster is
private to this data directory, so a separate database buys nothing). It listens on 127.0.0.1 only, opens
no Unix socket, and takes TCP connections (replication too) only with the generated password, checked with
SCRAM-SHA-256: ``pg_hba.conf`` is rewritten at every start to say exactly that. A cluster without a
``password`` file (a fresh one, or one made by a version that trusted every local connection) gets one
before the server starts, set in single-user mode (docs/design/devstack-credentials.md). As root,
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
from urllib.parse import quote

from core.settings import StartupError
from perseus_cli.devstack.pg_install import PgInstall
from perseus_cli.devstack.processes import HOST, child_preexec, error_line, open_log, read_from, server_env
from perseus_cli.devstack.server import PASSWORD_FILE_NAME, EmbeddedServer, new_password, read_secret, write_private
from perseus_cli.devstack.service_user import SERVICE_USER, ServiceUser, chown_tree, open_data_dir

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedPostgres"]

INITDB_TIMEOUT_S = 120.0
SINGLE_USER_TIMEOUT_S = 120.0
PASSWORD_ENCRYPTION = "scram-sha-256"
# The whole of pg_hba.conf: TCP from this machine, every database and replication, with the password only.
HBA = f"""\
# Written by `perseus up` (perseus_cli/devstack/postgres.py) at every start; edits are overwritten.
# TCP from this machine only, with the generated password (see the `password` file beside pgdata).
# No Unix socket is opened, so there is no `local` line.
host    all             all     127.0.0.1/32    {PASSWORD_ENCRYPTION}
host    all             all     ::1/128         {PASSWORD_ENCRYPTION}
host    replication     all     127.0.0.1/32    {PASSWORD_ENCRYPTION}
host    replication     all     ::1/128         {PASSWORD_ENCRYPTION}
"""


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

    @property
    def password(self) -> str | None:
        """The ``postgres`` user's password, from the ``password`` file; None before the first start."""
        return read_secret(self.dir / PASSWORD_FILE_NAME)

    def _url(self, port: int) -> str:
        password = self.password
        user = f"{self.USER}:{quote(password, safe='')}" if password else self.USER
        return f"postgresql://{user}@{HOST}:{port}/{self.DATABASE}"

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
            "-c",
            f"password_encryption={PASSWORD_ENCRYPTION}",
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
        fresh = not (self.pgdata / "PG_VERSION").exists()
        if fresh:
            self._initdb()
        elif self._user is not None:
            chown_tree(self.pgdata, self._user)
        self._secure(fresh=fresh)
        logger.info("embedded PostgreSQL data in %s", self.pgdata)

    # ---- credentials: a password for `postgres`, and a pg_hba.conf that asks for it

    def _secure(self, *, fresh: bool) -> None:
        """Give ``postgres`` a password when the cluster has none yet, then rewrite ``pg_hba.conf``.

        None yet: no ``password`` file (a cluster of an older version), or a cluster just made by initdb (whose
        ``pgdata`` someone removed to start over, leaving the file: it gets the stored password). The password
        is set first and stored after, so a failure in between leaves no stored password that the cluster
        does not know: the next start simply sets a new one.
        """
        password_file = self.dir / PASSWORD_FILE_NAME
        stored = read_secret(password_file)
        if stored is None or fresh:
            password = stored or new_password()
            self._single_user(f"ALTER ROLE {self.USER} PASSWORD '{password}'")
            if stored is None:
                write_private(password_file, f"{password}\n")
                logger.info("embedded PostgreSQL: generated a password for %r (in %s)", self.USER, password_file)
        hba = self.pgdata / "pg_hba.conf"
        write_private(hba, HBA)
        if self._user is not None:
            os.chown(hba, self._user.uid, self._user.gid)

    def _single_user(self, statement: str) -> None:
        """Run one statement in single-user mode (no server, no connection: stdin), as the server's user.

        The statement goes through stdin, never argv, so no other process sees it; the output
        (``single-user.log``) echoes no statement, only errors.
        """
        assert self._install is not None
        log, label = self.dir / "single-user.log", f"embedded {self.kind}"
        fd, offset = open_log(log)
        try:
            result = subprocess.run(
                [
                    str(self._install.postgres),
                    "--single",
                    "-D",
                    str(self.pgdata),
                    "-c",
                    f"password_encryption={PASSWORD_ENCRYPTION}",
                    self.DATABASE,
                ],
                input=f"{statement};\n".encode(),
                stdout=fd,
                stderr=fd,
                env=server_env(),
                timeout=SINGLE_USER_TIMEOUT_S,
                check=False,
                start_new_session=True,
                preexec_fn=child_preexec(signal.SIGKILL),
                **self._spawn_kwargs(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise StartupError(f"{label}: setting its password failed ({exc}; log {log})") from exc
        finally:
            os.close(fd)
        output = read_from(log, offset)
        if result.returncode != 0 or "ERROR:" in output or "FATAL:" in output:
            raise StartupError(
                f"{label}: setting its password failed (code {result.returncode}): {error_line(output)} (log {log})"
            )

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
