"""The shared skeleton of both gateway apps: typed context, lifecycle, request ids, health, metrics.

:func:`create_gateway_app` builds a Sanic app around a :class:`GatewayContext`, which the REST and
WebSocket factories then add their own routes to. Nothing lives at module level: the gateway's services
(:mod:`gateways.common.services`) are built once in ``before_server_start`` (on the server's loop) and
closed in ``after_server_stop``, and the app's metrics registry belongs to the app. The runner checks Redis
once before serving; the core need not be up for the gateway to start, and ``/health`` reports both.
``/readyz`` answers as ``/health`` does and ``/livez`` is 200 while the process serves (orchestrator probes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace
from typing import Any, Generic, TypeAlias, TypeVar

from sanic import HTTPResponse, Request, Sanic
from sanic.config import Config

from common import telemetry
from common.logs import request_id_var
from gateways.common.errors import ContractErrorHandler
from gateways.common.health import HealthCache, check_health
from gateways.common.http import REQUEST_ID_HEADER, json_response, request_id_of
from gateways.common.metrics import METRICS_CONTENT_TYPE, HttpMetrics
from gateways.common.ops_stats import Counts as OpsCounts, Heartbeat, gateway_id
from gateways.common.services import GatewayServices
from gateways.common.settings import GatewaySettings

logger = logging.getLogger(__name__)

PACKAGE_NAME = "perseus"
UNKNOWN_VERSION = "0+unknown"
MAX_REQUEST_BYTES = 1024 * 1024
NO_STORE = {"Cache-Control": "no-store"}


ServicesT = TypeVar("ServicesT", bound=GatewayServices)


@dataclass(slots=True, kw_only=True)
class GatewayContext(Generic[ServicesT]):
    """Everything a gateway's handlers may use: what exists from the start (settings, metrics, version) and
    :attr:`services`, built once when the server starts.

    Each gateway subclasses it and says, in :meth:`build_services`, what it builds on the shared services.
    """

    settings: GatewaySettings
    metrics: HttpMetrics
    version: str
    health_cache: HealthCache = field(default_factory=HealthCache)  # a flood of /health probes once a second
    started: float = field(default_factory=time.monotonic)  # /health's uptime_seconds
    # the gateway's counters in its ops record (gateways/common/ops_stats.py), written every 2 s while it serves
    ops_counts: OpsCounts = field(default=dict)
    _heartbeat: Heartbeat | None = None
    _services: ServicesT | None = None

    @property
    def services(self) -> ServicesT:
        """The gateway's services; they exist from ``before_server_start`` on, so every handler has them."""
        if self._services is None:
            raise RuntimeError("the gateway's services are built when its server starts")
        return self._services

    @property
    def serving(self) -> bool:
        return self._services is not None

    async def build_services(self, shared: GatewayServices) -> ServicesT:
        """The gateway's services on top of the ``shared`` ones (closed by the caller if this fails)."""
        raise NotImplementedError  # each gateway's context says what it builds

    async def open_services(self) -> None:
        shared = await GatewayServices.open(self.settings)
        try:
            self._services = await self.build_services(shared)
        except BaseException:
            await shared.aclose()
            raise

    def start_heartbeat(self) -> None:
        """Write this gateway's ops record (its counters) into Redis every few seconds, under its supervisor."""
        settings, services = self.settings, self.services
        self._heartbeat = Heartbeat(
            services.redis,
            settings.redis_prefix,
            settings.process,
            gateway_id(settings.process, settings.listen_port),
            settings.listen_addr,
            self.version,
            self.ops_counts,
        )
        services.tasks.spawn("ops-heartbeat", self._heartbeat.run)

    async def close_services(self) -> None:
        """Close them; they stay reachable (closed), so a late metrics scrape or log line still finds them."""
        if self._heartbeat is not None:
            await self._heartbeat.remove()  # out of the ops view at once (a killed gateway's record expires)
        if self._services is not None:
            await self._services.aclose()


ContextT = TypeVar("ContextT", bound=GatewayContext[Any])
GatewayApp: TypeAlias = Sanic[Config, GatewayContext[Any]]
GatewayRequest: TypeAlias = Request[GatewayApp, SimpleNamespace]


def package_version() -> str:
    try:
        return version(PACKAGE_NAME)
    except PackageNotFoundError:
        return UNKNOWN_VERSION


def create_gateway_app(name: str, context: ContextT) -> Sanic[Config, ContextT]:
    """A Sanic app with the shared lifecycle, middleware, error handler, ``/health`` and ``/metrics``."""
    app: Sanic[Config, ContextT] = Sanic(
        name,
        ctx=context,
        error_handler=ContractErrorHandler(),
        configure_logging=False,
        env_prefix="",  # configuration comes from PERSEUS_* only, never SANIC_*
    )
    app.config.MOTD = False
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.REQUEST_MAX_SIZE = MAX_REQUEST_BYTES
    app.before_server_start(open_services)
    app.after_server_stop(close_services)
    app.on_request(begin_request, priority=1000)
    app.on_response(finish_request, priority=-1000)
    app.add_route(health, "/health", methods=["GET"], name="health")
    app.add_route(livez, "/livez", methods=["GET"], name="livez")
    app.add_route(health, "/readyz", methods=["GET"], name="readyz")
    app.add_route(metrics, "/metrics", methods=["GET"], name="metrics")
    context.metrics.add_cache("health", context.health_cache.counts)
    if telemetry.enabled and context.settings.process == "rest":  # a span per request (the WS gateway: per subscribe)
        from gateways.common import tracing

        tracing.install(app)
    return app


async def open_services(app: GatewayApp) -> None:
    await app.ctx.open_services()
    app.ctx.start_heartbeat()
    settings = app.ctx.settings
    logger.info(
        "%s gateway listening",
        settings.process,
        extra={"fields": {"addr": settings.listen_addr, "core": settings.core_addr}},
    )


async def close_services(app: GatewayApp) -> None:
    await app.ctx.close_services()
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
    services = ctx.services
    result = await ctx.health_cache.get(
        lambda: check_health(
            services.core,
            services.redis_ping,
            process=ctx.settings.process,
            version=ctx.version,
            request_id=request_id_of(request),
            tasks=services.tasks,
            started=ctx.started,
        )
    )
    return json_response(result.body, status=result.http_status, headers=NO_STORE)


async def livez(request: GatewayRequest) -> HTTPResponse:
    """Liveness for an orchestrator: 200 whenever the event loop answers, whatever the core or Redis do.

    It probes nothing on purpose: a liveness probe that followed the dependencies would restart every gateway
    when the core or Redis blinks, which heals nothing. Readiness (``/readyz``) is ``/health``'s answer, so a
    gateway that cannot serve is taken out of its Service and put back when it can.
    """
    return json_response({"status": "ok"}, headers=NO_STORE)


async def metrics(request: GatewayRequest) -> HTTPResponse:
    body = request.app.ctx.metrics.render()
    return HTTPResponse(body, content_type=METRICS_CONTENT_TYPE, headers=NO_STORE)
