"""A server span for every REST request, when traces are on (:mod:`common.telemetry`).

:func:`install` adds two middleware to the app, and only when tracing is on, so a gateway without an OTLP
endpoint runs no tracing code at all. The span continues an incoming W3C ``traceparent`` header; a missing or
malformed one starts a new trace (never an error). It is current while the handler runs, so the core call's
metadata carries it (``gateways.common.core_client``) and the core's span becomes its child, and the log lines
written meanwhile carry its ids. It is named ``METHOD /route/<template>`` (``GET`` alone for a path no route
matched: a scanner's junk paths never make new names) and ends with the response's status.
"""

from __future__ import annotations

from typing import Any

from sanic import HTTPResponse, Request, Sanic

from common import telemetry
from gateways.common.http import request_id_of
from gateways.common.metrics import KNOWN_METHODS, OTHER


def install(app: Sanic[Any, Any]) -> None:
    app.on_request(begin_span, priority=999)  # right after the request id (1000)
    app.on_response(end_span, priority=-999)


async def begin_span(request: Request[Any, Any]) -> None:
    if getattr(request.ctx, "span", None) is not None:  # Sanic runs request middleware again for an error
        return
    from opentelemetry import context, trace

    parent = telemetry.extract(request.headers.items())
    method = request.method if request.method in KNOWN_METHODS else OTHER
    route = request.uri_template if request.route is not None else None
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.path": request.path,
        "perseus.request_id": request_id_of(request),  # the X-Request-ID the response carries
    }
    if route is not None:
        attributes["http.route"] = route
    span = telemetry.tracer().start_span(
        f"{method} {route}" if route else method, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
    )
    request.ctx.span = span
    request.ctx.span_token = context.attach(trace.set_span_in_context(span, parent))


async def end_span(request: Request[Any, Any], response: HTTPResponse) -> None:
    span = getattr(request.ctx, "span", None)
    token = getattr(request.ctx, "span_token", None)
    if span is None or token is None:
        return
    from opentelemetry import context

    request.ctx.span_token = None
    if span.is_recording():
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            telemetry.span_error(span, str(response.status))
        span.end()
    context.detach(token)
