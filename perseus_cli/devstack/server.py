"""The lifecycle both embedded servers share: pick a port, spawn, wait until ready, record, stop.

:class:`EmbeddedServer` is the base of :class:`~perseus_cli.devstack.postgres.EmbeddedPostgres` and
:class:`~perseus_cli.devstack.valkey.EmbeddedRedis`. Each server keeps everything under
``<data_dir>/<subdir>/`` and survives restarts::

    <subdir>.log    server output, appended
    server.json     pid, process start time, port and URL of the running server (the URL carries the
                    server's password, so the file is 0600, like ``password``)
    password        the server's generated password (0600; docs/design/devstack-credentials.md)
    last-port       the port to try first next time

A server listens on 127.0.0.1 only, on a free TCP port: the previous run's port when it is still
free, so URLs stay stable; never 5432 or 6379, which belong to the machine's own servers. It runs
in its own session (a Ctrl-C in the terminal reaches only the supervisor, which stops things in
order) and, unless ``detached``, with a parent-death signal (see :mod:`perseus_cli.devstack.processes`),
so call ``start()`` from a thread that lives as long as the server. ``server.json`` lets ``stop()``
in another process stop a detached server (``python -m perseus_cli.devstack stop``).
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from common.settings import redact_url
from core.settings import StartupError
from perseus_cli.devstack.processes import (
    POLL_S,
    RESERVED_PORTS,
    child_preexec,
    error_line,
    free_port,
    open_log,
    port_free,
    process_running,
    process_start_ticks,
    read_from,
    server_env,
    signal_group,
    stop_process,
    wait_gone,
)

logger = logging.getLogger(__name__)

__all__ = ["PASSWORD_FILE_NAME", "EmbeddedServer", "new_password", "read_secret", "write_private"]

PORT_ATTEMPTS = 5
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RECORD_NAME = "server.json"
PORT_FILE_NAME = "last-port"
PASSWORD_FILE_NAME = "password"
PASSWORD_BYTES = 24  # 192 random bits, 32 URL-safe characters: nothing to quote in a URL or a config file


def new_password() -> str:
    """A random password made of URL-safe characters only."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def write_private(path: Path, text: str) -> None:
    """Write ``path`` whole (a temporary file renamed over it), readable by its owner only (0600)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    tmp.replace(path)


def read_secret(path: Path) -> str | None:
    """The secret stored in ``path`` (see :func:`write_private`), or None when there is none."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


class EmbeddedServer(abc.ABC):
    """Lifecycle shared by both servers: ports, spawn, readiness, record, stop."""

    kind: ClassVar[str]
    subdir: ClassVar[str]
    graceful_signal: ClassVar[int]
    bind_failures: ClassVar[tuple[str, ...]]

    def __init__(self, data_dir: str | os.PathLike[str], *, detached: bool = False) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.dir = self.data_dir / self.subdir
        self.log_path = self.dir / f"{self.subdir}.log"
        self._detached = detached
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_offset = 0  # where the current run's output starts in the log

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
            redact_url(self.url),
            self._proc.pid if self._proc else -1,
            self.dir,
            self.log_path,
        )

    def exit_code(self) -> int | None:
        """The exit code of the server this object started, once it has ended; None while it runs."""
        return self._proc.poll() if self._proc is not None else None

    def last_words(self) -> str:
        """The most telling line the current (or last) run logged, and where the log is."""
        return f"{error_line(read_from(self.log_path, self._log_offset))}; log {self.log_path}"

    def restart(self, *, abort: Callable[[], bool] | None = None) -> None:
        """Start again after the server died: the *same* port and data; StartupError when it cannot.

        Its URL was handed to other processes, which reconnect to it, so a server on another port
        would be no restart: a port taken meanwhile is a failure, for the caller to retry later or
        give up on. ``abort`` is polled while waiting for readiness (a stop signal arrived).
        """
        port = self.port
        self._kill_now()  # reap the dead one (anything it left in its group dies by itself)
        if not port_free(port):
            raise StartupError(f"embedded {self.kind}: port {port} is taken by another process (log {self.log_path})")
        try:
            came_up = self._try_port(port, abort)
        except BaseException:
            self._kill_now()
            raise
        if not came_up:
            raise StartupError(f"embedded {self.kind}: port {port} was taken meanwhile (log {self.log_path})")
        self._write_record()

    def stop(self) -> None:
        """Stop gracefully, then kill; idempotent.

        Also stops a detached server that another process started in this data directory.
        """
        if self._proc is not None:
            if self._proc.poll() is None:
                stop_process(self._proc, graceful=self.graceful_signal, grace_s=STOP_TIMEOUT_S)
                logger.info("embedded %s stopped", self.kind)
        else:
            record = self._live_record()
            if record is not None:
                self._stop_recorded(int(record["pid"]), record.get("start_ticks"))
        self._proc = None
        self._record_path.unlink(missing_ok=True)

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
            port = previous if attempt == 0 and previous is not None and port_free(previous) else free_port()
            if self._try_port(port):
                self._port = port
                return
            logger.info("embedded %s: port %d was taken meanwhile; trying another", self.kind, port)
        raise StartupError(f"embedded {self.kind}: no free port after {PORT_ATTEMPTS} attempts (log {self.log_path})")

    def _try_port(self, port: int, abort: Callable[[], bool] | None = None) -> bool:
        """Spawn on ``port`` and wait; False when the port turned out to be taken."""
        argv = self._argv(port)
        fd, offset = open_log(self.log_path)
        self._log_offset = offset
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env=server_env(),
                start_new_session=True,
                preexec_fn=None if self._detached else child_preexec(self.graceful_signal),
                **self._spawn_kwargs(),
            )
        except OSError as exc:
            raise StartupError(f"embedded {self.kind}: cannot run {argv[0]} ({exc})") from exc
        finally:
            os.close(fd)
        return self._wait_ready(self._proc, port, offset, abort)

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], port: int, offset: int, abort: Callable[[], bool] | None = None
    ) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if abort is not None and abort():
                raise StartupError(f"embedded {self.kind}: start interrupted")
            code = proc.poll()
            if code is not None:
                output = read_from(self.log_path, offset)
                if any(marker in output for marker in self.bind_failures):
                    self._proc = None
                    return False
                raise StartupError(
                    f"embedded {self.kind} exited with code {code} during startup: "
                    f"{error_line(output)} (log {self.log_path})"
                )
            if self._ready(proc.pid, port):
                return True
            time.sleep(POLL_S)
        raise StartupError(f"embedded {self.kind} was not ready within {START_TIMEOUT_S:g} s (log {self.log_path})")

    def _kill_now(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                signal_group(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    # ---- the record of a running server (for `stop` from another process)

    @property
    def _record_path(self) -> Path:
        return self.dir / RECORD_NAME

    def _live_record(self) -> dict[str, Any] | None:
        """The record of a server that is still running, else None."""
        try:
            record = json.loads(self._record_path.read_text())
        except (OSError, ValueError):
            return None
        if not (isinstance(record, dict) and isinstance(record.get("pid"), int)):
            return None
        return record if process_running(record["pid"], record.get("start_ticks")) else None

    def _recorded_port(self) -> int | None:
        """The port of the previous run, reused when free so URLs stay stable across restarts."""
        try:
            port = int((self.dir / PORT_FILE_NAME).read_text())
        except (OSError, ValueError):
            return None
        return None if port in RESERVED_PORTS else port

    def _refuse_if_running(self) -> None:
        record = self._live_record()
        if record is not None:
            raise StartupError(
                f"embedded {self.kind} for {self.data_dir} is already running (pid {record['pid']}, "
                f"{redact_url(str(record.get('url', '?')))}); is another `perseus up` using this data directory?"
            )

    def _write_record(self) -> None:
        assert self._proc is not None and self._port is not None
        record = {
            "pid": self._proc.pid,
            "start_ticks": process_start_ticks(self._proc.pid),
            "port": self._port,
            "url": self.url,
        }
        write_private(self._record_path, json.dumps(record))  # the URL carries the password
        (self.dir / PORT_FILE_NAME).write_text(f"{self._port}\n")

    def _stop_recorded(self, pid: int, start_ticks: int | None) -> None:
        """Stop a server that is not our child: signal it and poll until it is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self.graceful_signal)
        if not wait_gone(pid, start_ticks, STOP_TIMEOUT_S):
            logger.warning("embedded %s (pid %d) did not stop within %g s; killing it", self.kind, pid, STOP_TIMEOUT_S)
            signal_group(pid, signal.SIGKILL)
            wait_gone(pid, start_ticks, STOP_TIMEOUT_S)
        logger.info("embedded %s (pid %d) stopped", self.kind, pid)
