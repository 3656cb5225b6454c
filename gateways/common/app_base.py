"""The shared skeleton of both gateway apps: typed context, lifecycle, request ids, health, metrics.

:func:`create_gateway_app` builds a Sanic app that the REST and WebSocket
factories then add their own routes to. Nothing lives at module level: the
core client and the Redis client are opened in ``before_server_start`` (on the
server's loop) and closed in ``after_server_stop``, and the app's metrics
registry belongs to the app. The runner checks Redis once before serving; the
core need not be up for the gateway to start, and ``/health`` reports both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace
from typing import TypeAlias

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sanic import HTTPResponse, Request, Sanic
from sanic.config import Config

from common.logs import request_id_var
from common.supervise import TaskSupervisor
from gateways.common.auth import KeyCache
from gateways.common.core_client import CoreClient
from gateways.common.errors import ContractErrorHandler
from gateways.common.health import REDIS_PING_TIMEOUT_S, check_health
from gateways.common.http import REQUEST_ID_HEADER, json_response, request_id_of
from gateways.common.metrics import METRICS_CONTENT_TYPE, HttpMetrics
from gateways.common.settings import GatewaySettings

logger = logging.getLogger(__name__)

PACKAGE_NAME = "perseus"
UNKNOWN_VERSION = "0+unknown"
MAX_REQUEST_BYTES = 1024 * 1024
REDIS_CONNECT_TIMEOUT_S = 1.0
REDIS_COMMAND_TIMEOUT_S = 2.0
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(slots=True)
class GatewayContext:
    """Everything a gateway's handlers may use; the clients exist while the server runs."""

    settings: GatewaySettings
    metrics: HttpMetrics
    version: str
    core: CoreClient | None = None
    keys: KeyCache | None = None
    redis: aioredis.Redis | None = None
    tasks: TaskSupervisor | None = None  # the gateway's long-lived tasks: restarted, and shown by /health when down


GatewayApp: TypeAlias = Sanic[Config, GatewayContext]
GatewayRequest: TypeAlias = Request[GatewayApp, SimpleNamespace]


def package_version() -> str:
    try:
        return version(PACKAGE_NAME)
    except PackageNotFoundError:
        return UNKNOWN_VERSION


def create_gateway_app(
    name: str, settings: GatewaySettings, *, context_type: type[GatewayContext] = GatewayContext
) -> GatewayApp:
    """A Sanic app with the shared lifecycle, middleware, error handler, ``/health`` and ``/metrics``.

    ``context_type``: a subclass of :class:`GatewayContext` with a gateway's own collaborators.
    """
    context = context_type(settings=settings, metrics=HttpMetrics(settings.process), version=package_version())
    app: GatewayApp = Sanic(
        name,
        ctx=context,
        error_handler=ContractErrorHandler(),
        configure_logging=False,
        env_prefix="",  # configuration comes from PERSEUS_* only, never SANIC_*
    )
    app.config.MOTD = False
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.REQUEST_MAX_SIZE = MAX_REQUEST_BYTES
    app.before_server_start(open_clients)
    app.after_server_stop(close_clients)
    app.on_request(begin_request, priority=1000)
    app.on_response(finish_request, priority=-1000)
    app.add_route(health, "/health", methods=["GET"], name="health")
    app.add_route(metrics, "/metrics", methods=["GET"], name="metrics")
    return app


async def open_clients(app: GatewayApp) -> None:
    settings = app.ctx.settings
    app.ctx.tasks = TaskSupervisor()
    app.ctx.core = CoreClient.connect(
        settings.core_addr, deadline_s=settings.core_deadline_s, keepalive_s=settings.grpc_keepalive_s
    )
    app.ctx.keys = KeyCache(app.ctx.core.lookup_key, grace_s=settings.key_grace_s)
    app.ctx.redis = aioredis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_COMMAND_TIMEOUT_S,
        health_check_interval=30,
    )
    try:
        async with asyncio.timeout(REDIS_PING_TIMEOUT_S):
            await app.ctx.redis.ping()
    except (TimeoutError, RedisError, OSError) as exc:
        logger.warning("Redis is not reachable yet; /health reports it down (%s)", type(exc).__name__)
    logger.info(
        "%s gateway listening",
        settings.process,
        extra={"fields": {"addr": settings.listen_addr, "core": settings.core_addr}},
    )


async def close_clients(app: GatewayApp) -> None:
    core, redis, tasks = app.ctx.core, app.ctx.redis, app.ctx.tasks
    app.ctx.core = app.ctx.redis = app.ctx.tasks = None
    if tasks is not None:
        await tasks.aclose(timeout_s=1.0)
    try:
        if core is not None:
            await core.close()
    finally:
        if redis is not None:
            await redis.aclose()
    logger.info("%s gateway stopped", app.ctx.settings.process)


async def begin_request(request: GatewayRequest) -> None:
    """Runs first; idempotent, because Sanic runs request middleware again for an error response."""
    if getattr(request.ctx, "started", None) is None:
        request.ctx.started = time.perf_counter()
    request_id_var.set(request_id_of(request))


async def finish_request(request: GatewayRequest, response: HTTPResponse) -> None:
    """Runs last, on every response (error responses included): request id header and metrics."""
    response.headers[REQUEST_ID_HEADER] = request_id_of(request)
    started = getattr(request.ctx, "started", None)
    elapsed = time.perf_counter() - started if isinstance(started, float) else 0.0
    route = request.uri_template if request.route is not None else None
    request.app.ctx.metrics.observe(route, request.method, response.status, elapsed)


async def health(request: GatewayRequest) -> HTTPResponse:
    ctx = request.app.ctx
    redis = ctx.redis
    result = await check_health(
        ctx.core,
        redis.ping if redis is not None else None,
        process=ctx.settings.process,
        version=ctx.version,
        request_id=request_id_of(request),
        tasks=ctx.tasks,
    )
    return json_response(result.body, status=result.http_status, headers=NO_STORE)


async def metrics(request: GatewayRequest) -> HTTPResponse:
    body = request.app.ctx.metrics.render()
    return HTTPResponse(body, content_type=METRICS_CONTENT_TYPE, headers=NO_STORE)
