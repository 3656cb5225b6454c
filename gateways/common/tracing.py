"""The gateways' spans, when traces are on (:mod:`common.telemetry`): one per REST request, one per WebSocket
subscribe.

:func:`install` adds two middleware to the app, and only when tracing is on, so a gateway without an OTLP
endpoint runs no tracing code at all. The span continues an incoming W3C ``traceparent`` header; a missing or
malformed one starts a new trace (never an error). It is current while the handler runs, so the core call's
metadata carries it (``gateways.common.core_client``) and the core's span becomes its child, and the log lines
written meanwhile carry its ids. It is named ``METHOD /route/<template>`` (``GET`` alone for a path no route
matched: a scanner's junk paths never make new names) and ends with the response's status. Probes and
scrapes (``/health``, ``/livez``, ``/readyz``, ``/metrics``) get none.

A WebSocket subscribe's span (:func:`subscribe_span`) continues the handshake's ``traceparent``
(:func:`attach_handshake`). Subscribes travel to the core as messages on the gateway's one shared
``Multiplex`` stream, not as calls of their own, so no core span hangs under them; the events delivered
later link back to their publish instead (see docs/design/traces.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sanic import HTTPResponse, Request, Sanic

from common import telemetry
from gateways.common.http import request_id_of
from gateways.common.metrics import KNOWN_METHODS, OTHER

if TYPE_CHECKING:
    from opentelemetry.trace import Link

MAX_CHANNEL_ATTRIBUTES = 50  # a connection holds at most 50 channels
MAX_LINKS = 32  # a delivery span links at most this many publish spans
# Probes and scrapes: an orchestrator's every few seconds per pod would be most of the traces, and say nothing.
UNTRACED_PATHS = frozenset({"/health", "/livez", "/readyz", "/metrics"})


def install(app: Sanic[Any, Any]) -> None:
    app.on_request(begin_span, priority=999)  # right after the request id (1000)
    app.on_response(end_span, priority=-999)


async def begin_span(request: Request[Any, Any]) -> None:
    if getattr(request.ctx, "span", None) is not None:  # Sanic runs request middleware again for an error
        return
    if request.path in UNTRACED_PATHS:
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


def attach_handshake(request: Request[Any, Any]) -> None:
    """Make the WebSocket handshake's ``traceparent`` (if any, and valid) the parent of the spans this
    connection starts. Called in the connection's own task, which ends with the connection: nothing to undo."""
    from opentelemetry import context

    context.attach(telemetry.extract(request.headers.items()))


@contextmanager
def subscribe_span(channels: Iterable[str]) -> Iterator[None]:
    """The span of one WebSocket subscribe: the checks, the join on the core stream, the replay of a resume and
    the catch-up, until the client is on the live routes (or refused)."""
    from opentelemetry import trace

    names = list(channels)
    attributes: dict[str, list[str] | int] = {
        "perseus.channels": names[:MAX_CHANNEL_ATTRIBUTES],
        "perseus.channel_count": len(names),
    }
    with telemetry.tracer().start_as_current_span("ws subscribe", kind=trace.SpanKind.SERVER, attributes=attributes):
        yield


def deliver(on_response: Callable[[Any], None], response: Any) -> None:
    """Hand a ``MultiplexResponse`` from the core to the hub (``on_response``), inside a ``ws deliver`` span
    linked to the publish span of each event that carries one (``StreamEvent.traceparent``): ingest, publish
    and delivery are joined by links, across the processes. Events that carry none cost no span."""
    kind = response.WhichOneof("kind")
    if kind == "event":
        events = (response.event,)
    elif kind == "events":
        events = tuple(response.events.events)
    else:
        on_response(response)
        return
    links: list[Link] = []
    seen: set[str] = set()
    for event in events:
        if event.traceparent and event.traceparent not in seen and len(links) < MAX_LINKS:
            seen.add(event.traceparent)
            if (link := telemetry.link_to(event.traceparent)) is not None:
                links.append(link)
    if not links:
        on_response(response)
        return
    from opentelemetry import trace

    attributes: dict[str, str | int] = {"perseus.channel": events[0].channel, "perseus.events": len(events)}
    with telemetry.tracer().start_as_current_span(
        "ws deliver", kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes
    ):
        on_response(response)
