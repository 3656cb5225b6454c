"""The core's Prometheus endpoint: an explicit address, or the first free port from the default one.

Several cores may run on one host (a leader and its standbys, a blue/green
pair). With ``PERSEUS_CORE_METRICS_ADDR`` unset, the first core gets the
default ``127.0.0.1:9464`` as before and each further one the next port that
is free (9465, 9466, …): the port is bound, not probed, so two cores starting
at once cannot both pick the same one. The address actually used is logged at
startup (``core metrics``, and in ``core serving``). An explicit address is
taken as an instruction: if it is in use, the core does not start.
"""

from __future__ import annotations

import errno
import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from core.settings import StartupError

logger = logging.getLogger(__name__)

# How many ports after the default one are tried before giving up (a host with 32 cores has other problems).
SEARCHED_PORTS = 32


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def join_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start_metrics_server(
    addr: str, registry: CollectorRegistry, *, explicit: bool
) -> tuple[WSGIServer, threading.Thread, str]:
    """Serve ``registry`` at ``addr`` (or, unless ``explicit``, at the first free port after it).

    Returns the server, its thread and the address it listens on; raises
    :class:`StartupError` when no port could be had.
    """
    host, port = split_addr(addr)
    candidates = [port] if explicit or port == 0 else list(range(port, min(port + SEARCHED_PORTS, 65536)))
    error: OSError | None = None
    for candidate in candidates:
        try:
            server, thread = start_http_server(candidate, host, registry=registry)
        except OSError as exc:
            error = exc
            if exc.errno == errno.EADDRINUSE:
                continue
            break
        used = join_addr(host, server.server_port)
        if not explicit and candidate != port:
            logger.info("core metrics: %s is taken, using %s", join_addr(host, port), used)
        logger.info("core metrics at http://%s/metrics", used, extra={"fields": {"metrics_addr": used}})
        return server, thread, used
    if explicit or error is None or error.errno != errno.EADDRINUSE:
        raise StartupError(f"PERSEUS_CORE_METRICS_ADDR: cannot listen on {addr} ({error})")
    raise StartupError(
        f"PERSEUS_CORE_METRICS_ADDR: ports {port} to {candidates[-1]} on {host} are all taken ({error}); "
        "set the variable to a free host:port, or to empty to turn the endpoint off"
    )
