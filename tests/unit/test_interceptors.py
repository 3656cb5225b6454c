"""Unary and streaming calls are observed alike, on a real in-process grpc.aio server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
import pytest
from grpc import aio
from prometheus_client import CollectorRegistry

from common.logs import request_id_var
from core.rpc.auth import Metadata
from core.rpc.interceptors import CallLogging, CallMetrics, ObservedServer, RequestIds, wrap_handler

SERVICE = "test.Echo"


def _identity(value: bytes) -> bytes:
    return value


async def _unary(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
    if request == b"fail":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    return request_id_var.get().encode()


async def _stream(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
    for _ in range(int(request)):
        yield request_id_var.get().encode()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[aio.Channel, CollectorRegistry]]:
    registry = CollectorRegistry()
    server = aio.server()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary, _identity, _identity),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream, _identity, _identity),
    }
    observed = ObservedServer(server, [RequestIds(), CallLogging(), CallMetrics(registry)])
    observed.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, registry
    finally:
        await channel.close()
        await server.stop(None)


def _count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_unary_call_gets_the_callers_request_id_and_is_counted(
    echo: tuple[aio.Channel, CollectorRegistry],
) -> None:
    channel, registry = echo
    call = channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)(b"x", metadata=(("x-request-id", "req-42"),))
    assert await call == b"req-42"
    assert ("x-request-id", "req-42") in tuple(await call.trailing_metadata())
    assert _count(registry, "perseus_grpc_requests_total", method=f"/{SERVICE}/Unary", code="OK") == 1


async def test_a_request_id_is_made_when_none_is_sent(echo: tuple[aio.Channel, CollectorRegistry]) -> None:
    channel, _ = echo
    reply = await channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)(b"x")
    assert len(reply) == 32


async def test_aborted_unary_call_is_counted_with_its_code(echo: tuple[aio.Channel, CollectorRegistry]) -> None:
    channel, registry = echo
    with pytest.raises(aio.AioRpcError) as caught:
        await channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)(b"fail")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    # the server counts the call as its handler ends, which may be just after the client saw the status
    for _ in range(100):
        if _count(registry, "perseus_grpc_requests_total", method=f"/{SERVICE}/Unary", code="NOT_FOUND"):
            break
        await asyncio.sleep(0.02)
    assert _count(registry, "perseus_grpc_requests_total", method=f"/{SERVICE}/Unary", code="NOT_FOUND") == 1


async def test_streaming_call_is_wrapped_too(echo: tuple[aio.Channel, CollectorRegistry]) -> None:
    channel, registry = echo
    call = channel.unary_stream(f"/{SERVICE}/Stream", _identity, _identity)(b"3", metadata=(("x-request-id", "s-1"),))
    assert [m async for m in call] == [b"s-1"] * 3
    method = f"/{SERVICE}/Stream"
    assert _count(registry, "perseus_grpc_requests_total", method=method, code="OK") == 1
    assert _count(registry, "perseus_grpc_stream_messages_sent_total", method=method) == 3
    assert _count(registry, "perseus_grpc_active_streams", method=method) == 0
    assert _count(registry, "perseus_grpc_request_duration_seconds_count", method=method) == 1


async def test_a_failed_call_is_logged_with_its_method_code_and_request_id(
    echo: tuple[aio.Channel, CollectorRegistry], caplog: pytest.LogCaptureFixture
) -> None:
    channel, _ = echo
    with caplog.at_level(logging.INFO, logger="core.rpc.interceptors"):  # until the line is logged
        with pytest.raises(aio.AioRpcError):
            await channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)(
                b"fail", metadata=(("x-request-id", "log-1"),)
            )
        for _ in range(
            500
        ):  # the server logs as its handler unwinds, which may be just after the client has the status
            finished = [r for r in caplog.records if r.getMessage() == "rpc finished"]
            if finished:
                break
            await asyncio.sleep(0.01)
    (record,) = finished
    assert record.fields["code"] == "NOT_FOUND"  # type: ignore[attr-defined]
    assert record.fields["method"] == f"/{SERVICE}/Unary"  # type: ignore[attr-defined]


class _CountingContext:
    """Just enough of a servicer context for the wrapper, counting reads of the invocation metadata."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata
        self.reads = 0
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        self.reads += 1
        return tuple(self.metadata)  # grpc builds a new tuple at every call

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    def code(self) -> None:
        return None


async def test_the_metadata_is_read_once_per_call_for_the_request_id_and_the_credential_check() -> None:
    seen: list[tuple[tuple[str, str], ...]] = []

    def check(metadata: Metadata) -> None:
        seen.append(tuple(metadata))

    registry = CollectorRegistry()
    handler = grpc.unary_unary_rpc_method_handler(_unary, _identity, _identity)
    wrapped = wrap_handler(handler, f"/{SERVICE}/Unary", [RequestIds(), CallLogging(), CallMetrics(registry)], check)
    context = _CountingContext((("authorization", "Bearer t"), ("x-request-id", "once-1")))
    behavior = cast(Callable[[bytes, Any], Awaitable[bytes]], wrapped.unary_unary)
    assert await behavior(b"x", context) == b"once-1"
    assert context.reads == 1 and seen == [context.metadata]
    assert context.trailing == (("x-request-id", "once-1"),)
    assert _count(registry, "perseus_grpc_requests_total", method=f"/{SERVICE}/Unary", code="OK") == 1
