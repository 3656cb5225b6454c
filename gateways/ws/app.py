"""The WebSocket gateway: ``create_app(settings)`` and the ``perseus ws`` entry point.

It serves the shared ``/health`` and ``/metrics``, the stream
``/public/v1/stream`` (``session.py``) and its AsyncAPI 3 document
``/public/v1/asyncapi.json`` (``asyncapi.py``). Sanic's websocket settings
carry the protocol limits: the maximum frame size (1009 beyond it) and the
protocol ping every heartbeat interval, a peer that does not answer within
the ping timeout being closed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import orjson
from prometheus_client import Gauge
from sanic import HTTPResponse, Websocket

from gateways.common.app_base import GatewayApp, GatewayRequest, create_gateway_app
from gateways.common.runner import EXIT_STARTUP_ERROR, run_gateway
from gateways.common.settings import GatewaySettings, GatewaySettingsError
from gateways.ws.asyncapi import STREAM_PATH, asyncapi_document
from gateways.ws.protocol import CloseCode
from gateways.ws.session import WsRuntime
from gateways.ws.settings import WsSettings

APP_NAME = "perseus_ws"
ASYNCAPI_PATH = "/public/v1/asyncapi.json"


def create_app(settings: GatewaySettings, ws_settings: WsSettings | None = None) -> GatewayApp:
    """The WebSocket gateway app; its clients and the core stream open when the server starts."""
    ws_settings = ws_settings or WsSettings()
    app = create_gateway_app(APP_NAME, settings)
    app.config.WEBSOCKET_MAX_SIZE = ws_settings.max_frame_bytes
    app.config.WEBSOCKET_PING_INTERVAL = ws_settings.heartbeat_s
    app.config.WEBSOCKET_PING_TIMEOUT = ws_settings.ping_timeout_s
    runtime = WsRuntime(ws_settings, redis_url=settings.redis_url, redis_prefix=settings.redis_prefix)
    app.after_server_start(runtime.start)
    app.before_server_stop(runtime.stop)
    _register_metrics(app, runtime)
    document = orjson.dumps(asyncapi_document(app.ctx.version, settings.listen_addr))

    async def stream(request: GatewayRequest, ws: Websocket) -> None:
        await runtime.serve(request, ws)

    async def asyncapi(request: GatewayRequest) -> HTTPResponse:
        return HTTPResponse(document, content_type="application/json")

    app.add_websocket_route(stream, STREAM_PATH, name="stream")
    app.add_route(asyncapi, ASYNCAPI_PATH, methods=["GET"], name="asyncapi")
    return app


def _register_metrics(app: GatewayApp, runtime: WsRuntime) -> None:
    registry = app.ctx.metrics.registry
    gauges = {
        "perseus_ws_connections": ("Open client connections", lambda: len(runtime.sinks)),
        "perseus_ws_events": (
            "Events received from the core",
            lambda: runtime.upstream.hub.events if runtime.upstream else 0,
        ),
        "perseus_ws_skipped_events": (
            "Events skipped for slow clients",
            lambda: runtime.skipped_closed + sum(s.skipped for s in runtime.sinks),
        ),
        "perseus_ws_slow_closes": (
            "Clients closed with 4009",
            lambda: runtime.slow_closes + sum(s.close_code == CloseCode.TOO_SLOW for s in runtime.sinks),
        ),
        "perseus_ws_core_streams_opened": (
            "Multiplex streams opened to the core",
            lambda: runtime.upstream.streams_opened if runtime.upstream else 0,
        ),
        "perseus_ws_event_lag_seconds_max": (
            "Longest time from an event's publication in the core to its fan-out here",
            lambda: runtime.upstream.hub.lag.max_s if runtime.upstream else 0.0,
        ),
        "perseus_ws_event_lag_seconds_sum": (
            "Sum of the times from publication to fan-out",
            lambda: runtime.upstream.hub.lag.total_s if runtime.upstream else 0.0,
        ),
        "perseus_ws_channels": (
            "Channels carried from the core",
            lambda: len(runtime.upstream.hub.routes) if runtime.upstream else 0,
        ),
    }
    for name, (help_text, read) in gauges.items():
        Gauge(name, help_text, registry=registry).set_function(read)


def run_ws(environ: Mapping[str, str]) -> int:
    """``perseus ws``: serve until SIGINT/SIGTERM; 2 on bad settings or an unusable listen address."""
    try:
        ws_settings = WsSettings.from_env(environ)
    except GatewaySettingsError as exc:
        print(f"perseus ws: {exc}", file=sys.stderr)
        return EXIT_STARTUP_ERROR
    return run_gateway(environ, process="ws", create_app=lambda settings: create_app(settings, ws_settings))
