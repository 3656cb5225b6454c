"""Server interceptors: request id, structured logging and Prometheus metrics.

Each concern is one interceptor, and each wraps unary AND streaming handlers
the same way: :func:`wrap_handler` turns an interceptor's ``around`` (an
async context manager entered for the whole call) into a new method handler
of the same kind.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from core.logs import request_id_var

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128


@dataclass(slots=True)
class Call:
    """What an interceptor may observe about one RPC while it runs.

    ``peer`` is read when the call starts: a finished call's context must not
    be asked anything. ``sent`` counts a stream's messages; every interceptor
    of one call shares it (:func:`wrap_handler`).
    """

    method: str
    context: aio.ServicerContext[Any, Any]
    streaming: bool
    peer: str = ""
    sent: list[int] = field(default_factory=lambda: [0])

    @property
    def messages_sent(self) -> int:
        return self.sent[0]

    def code(self, exc: BaseException | None) -> grpc.StatusCode:
        """The status the client gets, given the exception the handler ended with."""
        if exc is None or isinstance(exc, aio.AbortError):
            return _status_code(self.context.code())
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            return grpc.StatusCode.CANCELLED
        return grpc.StatusCode.UNKNOWN


def _status_code(code: Any) -> grpc.StatusCode:
    """``context.code()`` gives None (never set), a StatusCode or its integer value."""
    if code is None:
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


Around = Callable[[Call], AbstractAsyncContextManager[None]]


def wrap_handler(handler: grpc.RpcMethodHandler, method: str, around: Around) -> grpc.RpcMethodHandler:
    """Return ``handler`` with every call run inside ``around(call)``.

    A stream runs in its call's own task and writes with ``context.write()``:
    a client that cancels then raises CancelledError right here while the call
    still exists, so every ``around`` and the servicer's own ``finally`` run in
    that task. Wrapping the stream as an async generator instead lets grpc drop
    the generator unclosed on cancellation; the loop finalizes it later in
    another task, after the call is gone, and touching the call's context there
    crashed the process (SIGSEGV).
    """
    if handler.unary_unary or handler.stream_unary:
        behavior = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            async with around(Call(method, context, streaming=False, peer=context.peer())):
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result

        factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return factory(unary, handler.request_deserializer, handler.response_serializer)

    behavior = handler.unary_stream or handler.stream_stream

    async def streaming(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        sent = _stream_sent.get()
        token = _stream_sent.set(sent := [0]) if sent is None else None  # the outermost wrapper counts
        try:
            async with around(Call(method, context, streaming=True, peer=context.peer(), sent=sent)):
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async with aclosing(result):
                        async for message in result:
                            await context.write(message)
                            sent[0] += 1
                else:  # an inner wrapper, or a handler that writes with context.write() itself
                    await result
        finally:
            if token is not None:
                _stream_sent.reset(token)

    factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return factory(streaming, handler.request_deserializer, handler.response_serializer)


_stream_sent: ContextVar[list[int] | None] = ContextVar("stream_messages_sent", default=None)


class _AroundInterceptor(aio.ServerInterceptor):
    """Base: subclasses implement ``around``; this applies it to every method."""

    def around(self, call: Call) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return wrap_handler(handler, handler_call_details.method, self.around)


class RequestIdInterceptor(_AroundInterceptor):
    """Takes the caller's ``x-request-id`` (or makes one), exposes it in a contextvar,
    and returns it in the trailing metadata."""

    @asynccontextmanager
    async def around(self, call: Call) -> AsyncIterator[None]:
        incoming = dict(call.context.invocation_metadata() or ()).get(REQUEST_ID_HEADER, "")
        request_id = _clean_request_id(incoming) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        try:
            yield
        finally:
            call.context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            request_id_var.reset(token)


def _clean_request_id(value: str | bytes) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    value = value.strip()
    if len(value) > MAX_REQUEST_ID_LENGTH or not value.isprintable():
        return ""
    return value


class _ObservingInterceptor(_AroundInterceptor):
    """Base of the interceptors that watch a call from start to finish without changing it."""

    def started(self, call: Call) -> None:
        return None

    def finished(self, call: Call, code: grpc.StatusCode, exc: BaseException | None, duration_s: float) -> None:
        raise NotImplementedError

    @asynccontextmanager
    async def around(self, call: Call) -> AsyncIterator[None]:
        started = time.perf_counter()
        exc: BaseException | None = None
        self.started(call)
        try:
            yield
        except BaseException as error:
            exc = error
            raise
        finally:
            self.finished(call, call.code(exc), exc, time.perf_counter() - started)


_LOG_LEVELS = {grpc.StatusCode.OK: logging.DEBUG, grpc.StatusCode.UNKNOWN: logging.ERROR}


class LoggingInterceptor(_ObservingInterceptor):
    """One structured log line per finished call: method, code, duration, messages.

    Successful calls log at DEBUG (a busy core must not spend its CPU on them),
    failed ones at INFO, and handler crashes (UNKNOWN) at ERROR with the traceback.
    """

    def finished(self, call: Call, code: grpc.StatusCode, exc: BaseException | None, duration_s: float) -> None:
        level = _LOG_LEVELS.get(code, logging.INFO)
        if not logger.isEnabledFor(level):
            return
        fields: dict[str, object] = {
            "method": call.method,
            "code": code.name,
            "duration_ms": round(duration_s * 1000, 3),
            "peer": call.peer,
        }
        if call.streaming:
            fields["messages_sent"] = call.messages_sent
        logger.log(level, "rpc finished", extra={"fields": fields}, exc_info=code is grpc.StatusCode.UNKNOWN and exc)


class MetricsInterceptor(_ObservingInterceptor):
    """Prometheus counters and latency histograms per method and code, for every call kind."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("perseus_grpc_requests", "Finished RPCs", ["method", "code"], registry=registry)
        self.latency = Histogram(
            "perseus_grpc_request_duration_seconds",
            "RPC duration (for streams: the stream's lifetime)",
            ["method"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 300),
        )
        self.active_streams = Gauge("perseus_grpc_active_streams", "Open streaming RPCs", ["method"], registry=registry)
        self.stream_messages = Counter(
            "perseus_grpc_stream_messages_sent", "Messages sent on streams", ["method"], registry=registry
        )

    def started(self, call: Call) -> None:
        if call.streaming:
            self.active_streams.labels(call.method).inc()

    def finished(self, call: Call, code: grpc.StatusCode, exc: BaseException | None, duration_s: float) -> None:
        self.requests.labels(call.method, code.name).inc()
        self.latency.labels(call.method).observe(duration_s)
        if call.streaming:
            self.active_streams.labels(call.method).dec()
            self.stream_messages.labels(call.method).inc(call.messages_sent)
