"""Which worker this process is, when ``perseus core|rest|ws`` runs several on one port (standard library only).

``PERSEUS_CORE_WORKERS`` / ``PERSEUS_REST_WORKERS`` / ``PERSEUS_WS_WORKERS`` above 1 make the command a
supervisor (:mod:`perseus_cli.workers`) that starts that many worker processes; each runs the ordinary
server code with :func:`current` telling it its index, so it listens with ``SO_REUSEPORT`` (the kernel
spreads new connections over the workers) and says when it serves. A process started directly is no
worker: :func:`current` is None and nothing changes (docs/design/workers.md).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol


class ReadyFlag(Protocol):
    def set(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    index: int  # 0 .. count - 1; a restarted worker keeps its index
    count: int
    ready: ReadyFlag  # set once the worker serves (the supervisor's sign that it started)


_current: WorkerSlot | None = None


def current() -> WorkerSlot | None:
    """This process's slot, or None when it is not a worker of a supervisor."""
    return _current


def become(slot: WorkerSlot) -> None:
    global _current
    _current = slot


def mark_ready() -> None:
    """Tell the supervisor (if any) that this worker serves."""
    if _current is not None:
        _current.ready.set()


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT`` (and ``SO_REUSEADDR``), not yet listening:
    every worker binds its own, and the kernel balances new connections across them."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
