"""Child processes of the dev stack: death signals, liveness, stopping, log files and local ports.

Both the embedded servers and the ``perseus up`` children use these. A child started with
:func:`child_preexec` gets ``PR_SET_PDEATHSIG`` (Linux), so it stops when the process that
started it dies, even by SIGKILL. The death signal belongs to the *thread* that started the
child: start it from a thread that lives as long as the child (the main thread, normally).
Children run in their own session, so :func:`signal_group` and :func:`wait_or_kill` reach
everything they started.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "HOST",
    "RESERVED_PORTS",
    "child_preexec",
    "error_line",
    "free_port",
    "open_log",
    "port_free",
    "process_running",
    "process_start_ticks",
    "read_from",
    "server_env",
    "signal_group",
    "stop_process",
    "wait_gone",
    "wait_or_kill",
]

HOST = "127.0.0.1"
RESERVED_PORTS = frozenset({5432, 6379})  # the machine's own PostgreSQL and Redis
POLL_S = 0.05
_PR_SET_PDEATHSIG = 1
_START_TIME_FIELD = 19  # in the fields :func:`_proc_stat` returns
_ERROR_LINE = re.compile(r"fatal|panic|error|fail|abort", re.IGNORECASE)
# "2026-01-02 10:00:00.123 UTC [42] " (PostgreSQL) and "42:M 02 Jan 2026 10:00:00.123 # " (Valkey)
_LOG_PREFIX = re.compile(r"^(\d{4}-\d\d-\d\d \S+ \S+ \[\d+\] |\d+:[A-Z] \d+ \w+ \d{4} \S+ [#*.-] )")


# --------------------------------------------------------------------------- death signal


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


def child_preexec(death_signal: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child ``death_signal`` when this thread dies (Linux), or None.

    ``subprocess`` calls ``preexec_fn`` after it has switched ``user``/``group``, which matters:
    the kernel clears the death signal when credentials change, so it must be set afterwards.
    It survives the ``exec`` of an ordinary (not set-uid) binary. A parent that died before the
    ``prctl`` took effect is caught by comparing the parent pid, and the child then exits.
    """
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()
    signum = int(death_signal)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


# --------------------------------------------------------------------------- liveness


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first), or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot; Linux), to tell it from a reused pid."""
    fields = _proc_stat(pid)
    return int(fields[_START_TIME_FIELD]) if fields is not None else None


def process_running(pid: int, start_ticks: int | None) -> bool:
    """Whether ``pid`` is alive (zombies count as gone) and, if given, started at ``start_ticks``."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, but someone else's
        return True
    fields = _proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    return start_ticks is None or int(fields[_START_TIME_FIELD]) == start_ticks


def wait_gone(pid: int, start_ticks: int | None, timeout_s: float) -> bool:
    """Poll until ``pid`` (as started at ``start_ticks``) is gone; False when time runs out."""
    deadline = time.monotonic() + timeout_s
    while process_running(pid, start_ticks):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


# --------------------------------------------------------------------------- stopping


def signal_group(pid: int, signum: int) -> None:
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
        signal_group(proc.pid, signal.SIGKILL)
    return proc.wait()


def stop_process(proc: subprocess.Popen[Any], *, graceful: int, grace_s: float) -> int:
    """Send ``graceful`` (once), wait up to ``grace_s``, then SIGKILL its group; see :func:`wait_or_kill`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, graceful)
    return wait_or_kill(proc, grace_s)


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (never 5432 or 6379)."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- environment and logs


def server_env() -> dict[str, str]:
    """A small, predictable environment: no PG*/REDIS* variables leak into the servers."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return env


def open_log(path: Path) -> tuple[int, int]:
    """Open ``path`` for appending (never through a symlink); returns (fd, offset of this run)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    return fd, os.fstat(fd).st_size


def read_from(path: Path, offset: int) -> str:
    """What ``path`` holds from ``offset`` on (this run's output), or "" when it cannot be read."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def error_line(text: str) -> str:
    """The most telling line of a server's output: the last error-looking one, else the last one."""
    lines = [_LOG_PREFIX.sub("", line).strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"
