"""OpenTelemetry traces of every Perseus process, exported over OTLP/HTTP only when asked for.

:func:`setup` is called once at process start by the core, the REST gateway and the WebSocket gateway, each
with its own ``service.name`` (``perseus-core``, ``perseus-rest``, ``perseus-ws``). Tracing is on when the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and
``OTEL_SDK_DISABLED`` is not ``true``; the other standard variables apply as the SDK reads them
(``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_EXPORTER_OTLP_TIMEOUT``, headers…).

Off (the default): no tracer provider, no exporter, no SDK import, and every traced code path asks one
boolean, :data:`enabled`, before doing anything. On: spans go through a ``BatchSpanProcessor`` (a bounded
queue emptied by a thread of its own) to the OTLP/HTTP protobuf exporter. Ending a span only appends to that
queue, so a slow or unreachable collector never blocks or slows a request: when the queue is full the span is
dropped and counted (``perseus_trace_spans_dropped_total``), and batches the exporter could not deliver are
counted too (``perseus_trace_export_failed_spans_total``); both are on the process's ``/metrics``.

Client spans with no parent (a PostgreSQL query or a Redis call of a background task: a venue writer, the
price-update loop) are not recorded: they would be thousands of one-span traces. Work done for a call, a
request or a publish is. See docs/design/traces.md.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace import Link, Span, Tracer

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
SHUTDOWN_TIMEOUT_MS = 2_000  # at exit, what is queued gets this long to leave; an unreachable collector: dropped
DEFAULT_MAX_QUEUE_SIZE = 2_048  # the SDK's default, stated: OTEL_BSP_MAX_QUEUE_SIZE changes it

# The one boolean every traced path asks. Read it as ``telemetry.enabled`` (an attribute of the module), never
# ``from common.telemetry import enabled``, which would copy the value it had at import.
enabled = False
service_name = ""
_tracer: Tracer | None = None


class _Counts:
    """What the trace pipeline lost, for ``/metrics`` (written by the SDK's export thread, read at scrape)."""

    dropped = 0  # spans the full queue refused
    export_failed = 0  # spans of batches the exporter could not deliver


counts = _Counts()


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` asks for traces: an OTLP endpoint set, the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def setup(name: str, environ: Mapping[str, str] | None = None, *, instrument_postgres: bool = False) -> bool:
    """Turn tracing on for this process as ``service.name`` ``name`` when ``environ`` asks for it.

    Returns whether it is on. Call once, at process start, before any client is built (the instrumentations
    patch asyncpg's and redis-py's classes). ``instrument_postgres``: the core's asyncpg queries get spans.
    """
    global enabled, service_name, _tracer
    environ = os.environ if environ is None else environ
    if enabled or not wanted(environ):
        return enabled
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: name}),  # ours wins over OTEL_SERVICE_NAME, inherited by children
        sampler=_sampler(),
        shutdown_on_exit=False,  # ours below is bounded; the SDK's waits up to 30 s on a dead collector
    )
    endpoint = traces_endpoint(environ)
    exporter = OTLPSpanExporter(endpoint=endpoint)
    processor = BatchSpanProcessor(cast("SpanExporter", _CountingExporter(exporter)))
    _count_drops(processor)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    atexit.register(_shutdown, processor)
    RedisInstrumentor().instrument(tracer_provider=provider)
    if instrument_postgres:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    _tracer = provider.get_tracer("perseus")
    service_name, enabled = name, True
    logger.info("traces exported over OTLP/HTTP", extra={"fields": {"service": name, "endpoint": endpoint}})
    return True


def traces_endpoint(environ: Mapping[str, str]) -> str:
    """Where spans go, as the OTLP exporter specification says: the traces endpoint as given, else the base
    endpoint with ``/v1/traces`` appended. Read from ``environ`` (the SDK itself reads ``os.environ``)."""
    if traces := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return traces
    return environ["OTEL_EXPORTER_OTLP_ENDPOINT"].strip().rstrip("/") + "/v1/traces"


def _shutdown(processor: Any) -> None:
    """At exit: what is queued gets :data:`SHUTDOWN_TIMEOUT_MS` to leave (``BatchSpanProcessor.shutdown`` would
    wait up to 30 s for an unreachable collector)."""
    batcher = getattr(processor, "_batch_processor", None)
    if batcher is not None:
        batcher.shutdown(timeout_millis=SHUTDOWN_TIMEOUT_MS)
    else:
        processor.shutdown()


def _sampler() -> Any:
    """The SDK's sampler (``OTEL_TRACES_SAMPLER``, parent-based always-on by default), except that a client
    span without a parent is dropped (see the module's docstring)."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, _get_from_env_or_default
    from opentelemetry.trace import SpanKind

    configured = _get_from_env_or_default()

    class NoOrphanClients(Sampler):
        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Sequence[Link] | None = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if kind is SpanKind.CLIENT and not _has_parent(parent_context):
                return SamplingResult(Decision.DROP)
            return configured.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"NoOrphanClients({configured.get_description()})"

    return NoOrphanClients()


def _has_parent(parent_context: Context | None) -> bool:
    from opentelemetry import trace

    return trace.get_current_span(parent_context).get_span_context().is_valid


class _CountingExporter:
    """The OTLP exporter, counting the spans of every batch it could not deliver."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self._inner.export(spans)
        except Exception:
            counts.export_failed += len(spans)
            raise
        if result is not SpanExportResult.SUCCESS:
            counts.export_failed += len(spans)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _DropCounter:
    """Stands in for the batch processor's own metrics hooks: counts the spans its full queue dropped."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def register_queue_size(self, get_queue_size: Any) -> None:
        self._inner.register_queue_size(get_queue_size)

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        counts.dropped += count
        self._inner.drop_items(count, error_type)

    def finish_items(self, count: int) -> None:
        self._inner.finish_items(count)


def _count_drops(processor: Any) -> None:
    """Count the spans the processor's full queue drops. The SDK calls its processor metrics' ``drop_items``
    when its bounded queue refuses a span but exposes no count of its own; the hook sits on the processor's
    inner batcher (pinned SDK version; tests/integration/test_tracing.py sees the counter move)."""
    batcher = getattr(processor, "_batch_processor", None)
    if batcher is None or not hasattr(batcher, "_metrics"):
        logger.warning("this OpenTelemetry SDK hides its span queue: dropped spans are not counted")
        return
    batcher._metrics = _DropCounter(batcher._metrics)


class TraceMetrics(Collector):
    """``perseus_trace_spans_dropped_total`` and ``perseus_trace_export_failed_spans_total`` (0 with tracing
    off), for the process's own registry."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "perseus_trace_spans_dropped",
            "Spans dropped because the export queue was full (OTLP collector slow or unreachable)",
            counts.dropped,
        )
        yield CounterMetricFamily(
            "perseus_trace_export_failed_spans",
            "Spans of batches the OTLP exporter could not deliver",
            counts.export_failed,
        )


def tracer() -> Tracer:
    """This process's tracer; only while :data:`enabled`."""
    assert _tracer is not None, "telemetry.setup() turned tracing on first"
    return _tracer


def extract(carrier: Mapping[str, str] | Iterable[tuple[str, Any]]) -> Context:
    """The trace context in ``carrier`` (HTTP headers, gRPC metadata); a missing or malformed ``traceparent``
    gives an empty context (a new trace), never an error."""
    from opentelemetry import propagate
    from opentelemetry.context import Context

    headers: dict[str, str] = {}
    items = carrier.items() if isinstance(carrier, Mapping) else carrier
    for key, value in items:
        lowered = str(key).lower()
        if lowered in (TRACEPARENT, TRACESTATE):
            headers[lowered] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    if not headers:
        return Context()
    try:
        return propagate.extract(headers)
    except Exception:  # a propagator set by OTEL_PROPAGATORS that chokes on junk: a new trace, not a 500
        return Context()


def outgoing() -> tuple[tuple[str, str], ...]:
    """The current trace context as metadata pairs (``traceparent``, and ``tracestate`` if any) for a call."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


def current_traceparent() -> str:
    """The W3C ``traceparent`` of the current span, or "" outside one."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def link_to(traceparent: str) -> Link | None:
    """A span link to the span a ``traceparent`` names, or None when it is empty or malformed."""
    from opentelemetry import trace
    from opentelemetry.trace import Link

    if not traceparent:
        return None
    context = trace.get_current_span(extract(((TRACEPARENT, traceparent),))).get_span_context()
    return Link(context) if context.is_valid else None


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the current span in hex, for log lines; None outside a span."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:  # a span not recorded: ids nobody can look up
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def span_error(span: Span, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))
