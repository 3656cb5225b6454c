"""Run one gateway process the way ``perseus rest`` / ``perseus ws`` do.

Read the settings (a bad value: one line on stderr, exit 2), configure logging
(only here, the entry point), build the app and serve it in this process until
SIGINT/SIGTERM. A Redis that does not answer at startup stops it with one line
(the gateways need Redis for limits and connection counts; a core that is down
does not stop it: ``/health`` reports that with 503). A listen address that cannot be bound (port in use, unknown
host) is reported as one line naming the variable, and nothing is left running.

The pre-flight is a ``PING`` with redis-py's plain client, which any node of a Redis Cluster answers too; the
services then ask whether it is one (:mod:`gateways.common.services`), and a Redis gone between the two is
reported with the same line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

import redis
from sanic import Sanic

from common import logs, telemetry, workers
from common.settings import scrub, warn_unknown
from gateways.common.services import RedisUnreachable
from gateways.common.settings import LISTEN_ADDR_VARIABLES, GatewaySettings, Process, SettingsError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STARTUP_ERROR = 2
REDIS_PREFLIGHT_TIMEOUT_S = 3.0
# Sanic's default (100) drops SYNs when thousands of WebSocket clients connect at once.
LISTEN_BACKLOG = 4096

AppFactory = Callable[[GatewaySettings], Sanic[Any, Any]]  # a gateway app, whatever its context


def redis_unreachable(url: str) -> str:
    """Why Redis at ``url`` does not answer a PING, or "" when it does (the startup pre-flight).

    The error's kind and redis-py's text: the address and what failed (refused, a name not resolved, a TLS
    certificate not trusted, an ACL user refused), which is what an operator needs to fix the setting.
    redis-py never puts the password in these texts; should one ever appear, it is masked here.
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_PREFLIGHT_TIMEOUT_S)
    try:
        client.ping()
    except (OSError, redis.RedisError) as exc:
        reason = scrub(" ".join(str(exc).split()).rstrip("."), url)
        return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    finally:
        client.close()
    return ""


async def _mark_ready(app: Sanic[Any, Any], loop: object) -> None:
    workers.mark_ready()


def run_gateway(environ: Mapping[str, str], *, process: Process, create_app: AppFactory) -> int:
    """Serve the ``process`` gateway until stopped; returns the exit code."""
    program = f"perseus {process}"
    try:
        settings = GatewaySettings.from_env(environ, process=process)
    except SettingsError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return EXIT_STARTUP_ERROR
    logs.configure(settings.log_level, settings.log_format)
    warn_unknown(environ, logger)
    telemetry.setup(f"perseus-{process}", environ)
    if problem := redis_unreachable(settings.redis_url):
        print(f"{program}: PERSEUS_REDIS_URL: cannot reach Redis ({problem})", file=sys.stderr)
        return EXIT_STARTUP_ERROR
    app = create_app(settings)
    slot = workers.current()
    try:
        listen: dict[str, Any] = {"host": settings.listen_host, "port": settings.listen_port}
        if slot is not None:  # one of PERSEUS_<REST|WS>_WORKERS: the port is shared (SO_REUSEPORT)
            listen = {"sock": workers.reuse_port_socket(settings.listen_host, settings.listen_port)}
            app.register_listener(_mark_ready, "after_server_start")
        app.run(
            **listen,
            single_process=True,
            access_log=False,
            motd=False,
            backlog=LISTEN_BACKLOG,
        )
    except RedisUnreachable as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return EXIT_STARTUP_ERROR
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        variable = LISTEN_ADDR_VARIABLES[process]
        print(f"{program}: {variable}: cannot listen on {settings.listen_addr} ({reason})", file=sys.stderr)
        return EXIT_STARTUP_ERROR
    return EXIT_OK
