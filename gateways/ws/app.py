"""The WebSocket gateway: ``create_app(settings)`` and the ``perseus ws`` entry point.

It serves the shared ``/health`` and ``/metrics``, the stream
``/public/v1/stream`` (``session.py``) and its AsyncAPI 3 document
``/public/v1/asyncapi.json`` (``asyncapi.py``); the stream's handshake selects
``perseus.v1`` when offered (``subprotocols.py``). Sanic's websocket settings
carry the maximum frame size (1009 beyond it); the protocol ping every
heartbeat interval, a peer that does not answer within the ping timeout being
closed (1011), is the runtime's heartbeat job (``session.py``, ``sink.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TypeAlias

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from sanic import HTTPResponse, Request, Sanic, Websocket
from sanic.config import Config

from gateways.common.app_base import GatewayContext, create_gateway_app, package_version
from gateways.common.metrics import HttpMetrics
from gateways.common.runner import EXIT_STARTUP_ERROR, run_gateway
from gateways.common.services import GatewayServices
from gateways.common.settings import GatewaySettings, SettingsError
from gateways.ws.asyncapi import STREAM_PATH, asyncapi_document
from gateways.ws.protocol import CloseCode
from gateways.ws.session import WsRuntime
from gateways.ws.settings import WsSettings
from gateways.ws.subprotocols import SERVER_SUBPROTOCOLS, negotiate

APP_NAME = "perseus_ws"
ASYNCAPI_PATH = "/public/v1/asyncapi.json"


@dataclass(frozen=True, slots=True)
class WsServices(GatewayServices):
    """Besides the shared services: the streaming runtime (hub, core stream, connection counter)."""

    runtime: WsRuntime


@dataclass(slots=True, kw_only=True)
class WsContext(GatewayContext[WsServices]):
    ws_settings: WsSettings
    asyncapi: bytes

    async def build_services(self, shared: GatewayServices) -> WsServices:
        runtime = WsRuntime.build(
            self.ws_settings, shared, redis_url=self.settings.redis_url, redis_prefix=self.settings.redis_prefix
        )
        return WsServices(**shared.shared(), runtime=runtime)


WsApp: TypeAlias = Sanic[Config, WsContext]
WsRequest: TypeAlias = Request[WsApp, SimpleNamespace]


def create_app(settings: GatewaySettings, ws_settings: WsSettings | None = None) -> WsApp:
    """The WebSocket gateway app; its services and the core stream open when the server starts."""
    ws_settings = ws_settings or WsSettings()
    version = package_version()
    context = WsContext(
        settings=settings,
        metrics=HttpMetrics(settings.process),
        version=version,
        ws_settings=ws_settings,
        asyncapi=orjson.dumps(asyncapi_document(version, settings.listen_addr)),
    )
    app: WsApp = create_gateway_app(APP_NAME, context)
    app.config.WEBSOCKET_MAX_SIZE = ws_settings.max_frame_bytes
    # No keepalive task per connection: the runtime's heartbeat job pings every client and fails (1011) those
    # that do not answer within the ping timeout (sink.py). update() is what an attribute assignment calls.
    app.config.update(WEBSOCKET_PING_INTERVAL=None, WEBSOCKET_PING_TIMEOUT=None)
    # The client address of the connection caps: the TCP peer, or behind that many proxies the X-Forwarded-For
    # entry they appended (Sanic's request.remote_addr).
    app.config.PROXIES_COUNT = ws_settings.trusted_proxies
    app.after_server_start(start_runtime)
    app.before_server_stop(stop_runtime)
    _register_metrics(context)
    context.ops_counts = lambda: ws_counts(context)
    app.on_request(negotiate_subprotocols)
    app.add_websocket_route(stream, STREAM_PATH, name="stream", subprotocols=SERVER_SUBPROTOCOLS)
    app.add_route(asyncapi, ASYNCAPI_PATH, methods=["GET"], name="asyncapi")
    return app


async def start_runtime(app: WsApp) -> None:
    await app.ctx.services.runtime.start()


async def stop_runtime(app: WsApp) -> None:
    await app.ctx.services.runtime.stop()


async def negotiate_subprotocols(request: WsRequest) -> None:
    """Before the stream's handshake: which subprotocol it may select (``subprotocols.py``)."""
    if request.path == STREAM_PATH:
        negotiate(request)


async def stream(request: WsRequest, ws: Websocket) -> None:
    await request.app.ctx.services.runtime.serve(request, ws)


async def asyncapi(request: WsRequest) -> HTTPResponse:
    return HTTPResponse(request.app.ctx.asyncapi, content_type="application/json")


def ws_counts(context: WsContext) -> dict[str, int]:
    """The stream's numbers in this gateway's ops record (``/console/ops``), the same as its ``/metrics``:
    open connections, channels carried from the core, events skipped for slow clients, 4009 closes,
    connections refused at once for a cap, events received."""
    runtime = context.services.runtime if context.serving else None
    if runtime is None:
        return {"connections": 0, "channels": 0, "skipped_events": 0, "slow_closes": 0, "refused": 0, "events": 0}
    hub = runtime.upstream.hub
    return {
        "connections": len(runtime.sinks),
        "channels": len(hub.routes),
        "skipped_events": runtime.skipped_closed + sum(s.skipped for s in runtime.sinks),
        "slow_closes": runtime.slow_closes + sum(s.close_code == CloseCode.TOO_SLOW for s in runtime.sinks),
        "refused": runtime.refused_connections,
        "events": hub.events,
    }


class WsMetrics(Collector):
    """The stream's families, read from the runtime at scrape time (zero before its services exist).

    Counts that only grow are counter families (``# TYPE counter``, ``_total``), so ``rate()`` is right across a
    restart; the lag from publication to fan-out is a summary (``_sum`` and ``_count``) beside its maximum."""

    def __init__(self, context: WsContext) -> None:
        self._context = context

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | SummaryMetricFamily]:
        runtime = self._context.services.runtime if self._context.serving else None
        hub = runtime.upstream.hub if runtime is not None else None
        gauges = (
            ("perseus_ws_connections", "Open client connections", len(runtime.sinks) if runtime else 0),
            ("perseus_ws_channels", "Channels carried from the core", len(hub.routes) if hub else 0),
            (
                "perseus_ws_event_lag_seconds_max",
                "Longest time from an event's publication in the core to its fan-out here",
                hub.lag.max_s if hub else 0.0,
            ),
        )
        for name, help_text, value in gauges:
            yield GaugeMetricFamily(name, help_text, value=value)
        counters = (
            ("perseus_ws_events", "Events received from the core", hub.events if hub else 0),
            (
                "perseus_ws_skipped_events",
                "Events skipped for slow clients",
                runtime.skipped_closed + sum(s.skipped for s in runtime.sinks) if runtime else 0,
            ),
            (
                "perseus_ws_slow_closes",
                "Clients closed with 4009",
                runtime.slow_closes + sum(s.close_code == CloseCode.TOO_SLOW for s in runtime.sinks) if runtime else 0,
            ),
            (
                "perseus_ws_core_streams_opened",
                "Multiplex streams opened to the core",
                runtime.upstream.streams_opened if runtime else 0,
            ),
            (
                "perseus_ws_refused_connections",
                "Connections closed at once for the gateway's or an address's connection cap (1013, 4008)",
                runtime.refused_connections if runtime else 0,
            ),
        )
        for name, help_text, value in counters:
            yield CounterMetricFamily(name, help_text, value=value)
        yield SummaryMetricFamily(
            "perseus_ws_event_lag_seconds",
            "Time from an event's publication in the core to its fan-out here",
            count_value=hub.lag.count if hub else 0,
            sum_value=hub.lag.total_s if hub else 0.0,
        )


def _register_metrics(context: WsContext) -> None:
    context.metrics.registry.register(WsMetrics(context))


def run_ws(environ: Mapping[str, str]) -> int:
    """``perseus ws``: serve until SIGINT/SIGTERM; 2 on bad settings or an unusable listen address."""
    try:
        ws_settings = WsSettings.from_env(environ)
    except SettingsError as exc:
        print(f"perseus ws: {exc}", file=sys.stderr)
        return EXIT_STARTUP_ERROR
    return run_gateway(environ, process="ws", create_app=lambda settings: create_app(settings, ws_settings))
