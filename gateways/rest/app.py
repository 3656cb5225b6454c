"""The REST gateway: ``create_app(settings)`` and the ``perseus rest`` entry point.

It serves the shared ``/health`` and ``/metrics`` and the resource blueprints
under ``/public/v1`` and ``/internal/v1``. Any other path
answers 404 in the CONTRACT error format (the shared error handler).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateways.common.app_base import GatewayApp, create_gateway_app
from gateways.common.runner import run_gateway
from gateways.common.settings import GatewaySettings
from gateways.rest import ingest

APP_NAME = "perseus_rest"


def create_app(settings: GatewaySettings) -> GatewayApp:
    """The REST gateway app; its clients open when the server starts."""
    app = create_gateway_app(APP_NAME, settings)
    app.blueprint(ingest.blueprint)
    return app


def run_rest(environ: Mapping[str, str]) -> int:
    """``perseus rest``: serve until SIGINT/SIGTERM; 2 on bad settings or an unusable listen address."""
    return run_gateway(environ, process="rest", create_app=create_app)
