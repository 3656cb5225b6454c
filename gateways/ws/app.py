"""The WebSocket gateway: ``create_app(settings)`` and the ``perseus ws`` entry point.

It serves the shared ``/health`` and ``/metrics``, and ``/public/v1/stream``,
which for now accepts the upgrade and closes at once with 1013 (try again
later): the streaming protocol comes in a later issue.
"""

from __future__ import annotations

from collections.abc import Mapping

from sanic import Websocket

from gateways.common.app_base import GatewayApp, GatewayRequest, create_gateway_app
from gateways.common.runner import run_gateway
from gateways.common.settings import GatewaySettings

APP_NAME = "perseus_ws"
STREAM_PATH = "/public/v1/stream"
CLOSE_TRY_AGAIN_LATER = 1013
STREAM_UNAVAILABLE_REASON = "streaming is not available yet"


def create_app(settings: GatewaySettings) -> GatewayApp:
    """The WebSocket gateway app; its clients open when the server starts."""
    app = create_gateway_app(APP_NAME, settings)
    app.add_websocket_route(stream, STREAM_PATH, name="stream")
    return app


async def stream(request: GatewayRequest, ws: Websocket) -> None:
    """Placeholder for the streaming protocol: close with 1013."""
    await ws.close(code=CLOSE_TRY_AGAIN_LATER, reason=STREAM_UNAVAILABLE_REASON)


def run_ws(environ: Mapping[str, str]) -> int:
    """``perseus ws``: serve until SIGINT/SIGTERM; 2 on bad settings or an unusable listen address."""
    return run_gateway(environ, process="ws", create_app=create_app)
