"""The REST gateway: ``create_app(settings)`` and the ``perseus rest`` entry point.

It serves the shared ``/health`` and ``/metrics``, the public reads under
``/public/v1`` (:data:`OPERATIONS`), ingest under ``/internal/v1``, the
OpenAPI document, the stream's AsyncAPI document (the WebSocket gateway's, naming it at
``PERSEUS_WS_ADDR``), and the pages for people: ``/docs`` and ``/docs/stream`` (``docs.py``) and ``/console``
(``console.py``, following the WebSocket gateway at ``PERSEUS_WS_ADDR``).
Any other path answers 404 in the CONTRACT error format (the shared error handler). Every response carries
``X-Request-ID``, ``X-RateLimit-*`` and, for an allowed ``Origin``, CORS headers;
a preflight is answered on every route.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from sanic import HTTPResponse

from common import runtime as gc_policy
from gateways.common.app_base import create_gateway_app, package_version
from gateways.common.http import JSON_CONTENT_TYPE
from gateways.common.metrics import HttpMetrics
from gateways.common.runner import run_gateway
from gateways.common.settings import GatewaySettings
from gateways.rest import candles, console, export, indicators, ingest, market, ops, prices, signals, webhooks
from gateways.rest.candle_cache import cache_counter, size_gauge
from gateways.rest.context import RestApp, RestContext, RestRequest
from gateways.rest.cors import cors_headers
from gateways.rest.docs import PAGE_HEADERS, STREAM_DOCS_PATH, docs_html, load_assets, stream_html
from gateways.rest.guard import add_limit_headers
from gateways.rest.limiter import fallback_counter
from gateways.rest.openapi import ASYNCAPI_PATH, DOCS_PATH, SPEC_PATH, openapi_document
from gateways.ws.asyncapi import asyncapi_document

APP_NAME = "perseus_rest"
OPERATIONS = (
    market.EXCHANGES,
    market.SYMBOLS,
    candles.CANDLES,
    signals.SIGNAL,
    indicators.INDICATOR,
    signals.ALERTS,
    prices.LATEST,
    prices.RANGE,
    prices.CONSENSUS,
    *export.OPERATIONS,
)
PREFLIGHT_PATHS = (
    *(op.sanic_path for op in OPERATIONS),
    *webhooks.SANIC_PATHS,
    "/internal/v1/ingest",
    SPEC_PATH,
    ASYNCAPI_PATH,
)
CACHEABLE = {"Cache-Control": "public, max-age=60"}
HTML = "text/html; charset=utf-8"


def create_app(settings: GatewaySettings) -> RestApp:
    """The REST gateway app; its services are built when the server starts (:class:`RestContext`)."""
    metrics, version = HttpMetrics(settings.process), package_version()
    document = webhooks.document_with_webhooks(openapi_document(OPERATIONS, version=version))
    stream_document = asyncapi_document(version, settings.stream_addr)
    pages = {"spec_path": SPEC_PATH, "asyncapi_path": ASYNCAPI_PATH}
    context = RestContext(
        settings=settings,
        metrics=metrics,
        version=version,
        limit_fallbacks=fallback_counter(metrics.registry),
        candle_results=cache_counter(metrics.registry),
        candle_size=size_gauge(metrics.registry),
        openapi=orjson.dumps(document, option=orjson.OPT_INDENT_2),  # openapi_bytes' form, webhooks added
        asyncapi=orjson.dumps(stream_document),
        docs=docs_html(document, **pages),
        stream_docs=stream_html(stream_document, **pages),
        assets=load_assets(),
        console=console.console_html(stream_addr=settings.stream_addr, version=version),
        console_headers=console.page_headers(settings.stream_addr),
        console_assets=console.load_assets(),
    )
    app: RestApp = create_gateway_app(APP_NAME, context)
    app.config.PROXIES_COUNT = settings.trusted_proxies  # request.remote_addr: the client behind them
    blueprints = (market, candles, signals, indicators, prices, ingest, export, webhooks)
    for module in blueprints:
        app.blueprint(module.blueprint)
    app.add_route(openapi_spec, SPEC_PATH, methods=["GET"], name="openapi")
    app.add_route(asyncapi_spec, ASYNCAPI_PATH, methods=["GET"], name="asyncapi")
    app.add_route(docs_page, DOCS_PATH, methods=["GET"], name="docs")
    app.add_route(stream_docs_page, STREAM_DOCS_PATH, methods=["GET"], name="stream_docs")
    for index, path in enumerate(context.assets):
        app.add_route(docs_asset, path, methods=["GET"], name=f"docs_asset_{index}")
    app.add_route(console_page, console.CONSOLE_PATH, methods=["GET"], name="console")
    for index, path in enumerate(context.console_assets):
        app.add_route(console_asset, path, methods=["GET"], name=f"console_asset_{index}")
    for index, path in enumerate(PREFLIGHT_PATHS):
        app.add_route(preflight, path, methods=["OPTIONS"], name=f"preflight_{index}")
    ops.install(app)  # /internal/v1/ops and /console/ops: the operator view (ops.py)
    app.after_server_start(tune_gc)
    app.on_response(add_edge_headers, priority=-900)
    return app


async def tune_gc(app: RestApp) -> None:
    """Once serving, the gateways' collector policy (``common/runtime.py``): what startup
    built is frozen and young collections run less often. ``make bench-rest`` at 64 connections:
    P99 27-47 ms before, 23 ms after."""
    gc_policy.tune_gc()


async def add_edge_headers(request: RestRequest, response: HTTPResponse) -> None:
    await add_limit_headers(request, response)
    response.headers.update(
        cors_headers(request.headers.get("origin"), request.app.ctx.settings.cors_origins, preflight=False)
    )


async def preflight(request: RestRequest, **_: str) -> HTTPResponse:
    headers = cors_headers(request.headers.get("origin"), request.app.ctx.settings.cors_origins, preflight=True)
    return HTTPResponse(status=204, headers=headers)


async def openapi_spec(request: RestRequest) -> HTTPResponse:
    return HTTPResponse(request.app.ctx.openapi, content_type=JSON_CONTENT_TYPE, headers=CACHEABLE)


async def asyncapi_spec(request: RestRequest) -> HTTPResponse:
    return HTTPResponse(request.app.ctx.asyncapi, content_type=JSON_CONTENT_TYPE, headers=CACHEABLE)


async def docs_page(request: RestRequest) -> HTTPResponse:
    return HTTPResponse(request.app.ctx.docs, content_type=HTML, headers={**CACHEABLE, **PAGE_HEADERS})


async def stream_docs_page(request: RestRequest) -> HTTPResponse:
    return HTTPResponse(request.app.ctx.stream_docs, content_type=HTML, headers={**CACHEABLE, **PAGE_HEADERS})


async def docs_asset(request: RestRequest) -> HTTPResponse:
    asset = request.app.ctx.assets[request.path]
    return HTTPResponse(asset.content, content_type=asset.content_type, headers={**CACHEABLE, **PAGE_HEADERS})


async def console_page(request: RestRequest) -> HTTPResponse:
    context = request.app.ctx
    return HTTPResponse(context.console, content_type=HTML, headers={**CACHEABLE, **context.console_headers})


async def console_asset(request: RestRequest) -> HTTPResponse:
    context = request.app.ctx
    asset = context.console_assets[request.path]
    return HTTPResponse(
        asset.content, content_type=asset.content_type, headers={**CACHEABLE, **context.console_headers}
    )


def run_rest(environ: Mapping[str, str]) -> int:
    """``perseus rest``: serve until SIGINT/SIGTERM; 2 on bad settings or an unusable listen address."""
    return run_gateway(environ, process="rest", create_app=create_app)
