"""A server span for every unary call of the core's own services, when traces are on (:mod:`common.telemetry`).

:class:`CallTracing` is one more :class:`~core.rpc.interceptors.Concern`, added first (so its span is current
while the others run and the call's log line carries its ids) by ``core.rpc.server.build_server`` only when
tracing is on: with tracing off no call pays for it. The span continues the caller's W3C ``traceparent``
(gRPC metadata, put there by the gateways' core client); a malformed one starts a new trace. Spans of the
call's PostgreSQL queries (the asyncpg instrumentation) and Redis calls (``core.adapters.redis_client.call``,
redis-py's instrumentation) are its children.

Streams (``Subscribe``, ``Multiplex``) get no span: one would last the stream's life, hours. The live events
they carry are linked instead (see docs/design/traces.md). The health and reflection services are left out.
"""

from __future__ import annotations

import contextvars
from typing import Any

import grpc

from common import telemetry
from core.rpc.interceptors import Call, Concern

TRACED_PREFIX = "/perseus."

# (span, context token) of the call running in this task: the hooks of one call run in its own task.
_active: contextvars.ContextVar[tuple[Any, object] | None] = contextvars.ContextVar("call_span", default=None)


class CallTracing(Concern):
    def started(self, call: Call) -> None:
        if call.streaming or not call.method.startswith(TRACED_PREFIX):
            return
        from opentelemetry import context, trace

        parent = telemetry.extract(call.metadata())
        service, _, method = call.method[1:].rpartition("/")
        span = telemetry.tracer().start_span(
            call.method[1:],
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        )
        _active.set((span, context.attach(trace.set_span_in_context(span, parent))))

    def finished(self, call: Call, code: grpc.StatusCode, exc: BaseException | None, duration_s: float) -> None:
        active = _active.get()
        if active is None:
            return
        from opentelemetry import context

        span, token = active
        _active.set(None)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            telemetry.span_error(span, code.name)
        span.end()
        context.detach(token)  # type: ignore[arg-type]
