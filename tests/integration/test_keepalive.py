"""The gRPC keepalive agreed on both sides: clients ping at ``PERSEUS_GRPC_KEEPALIVE_S``, the core permits it.

Both intervals are shortened by setting (1 s pings) so that several ping
periods pass in seconds. gRPC's default server policy answers the third ping
within 5 minutes, with no data in between, with GOAWAY ``too_many_pings``:
with the gateway's 30 s pings that killed an idle stream after about 3
minutes; with 1 s pings, after about 3 s, which the second test shows against
a core whose permitted interval is gRPC's default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc import aio

import perseus_sdk
from core.adapters.events import EventPublisher
from gateways.common.core_client import channel_options, connection_went_away
from perseus.marketdata.v1 import stream_service_pb2 as pb, stream_service_pb2_grpc as stream_grpc
from tests.support import ws as support
from tests.support.processes import Process, running_core, running_gateway
from tests.support.ws import fresh_symbol, open_stream, prices_channel, publish_prices, recv, subscribe

pytestmark = pytest.mark.integration
key = support.key  # fixtures: an internal key, the core's event publisher
publisher = support.publisher

KEEPALIVE_S = 1.0
IDLE_S = 6.0  # six ping periods; gRPC's default policy ends the connection after three
GRPC_DEFAULT_MIN_PING_INTERVAL_S = 300.0  # what a core permits when it keeps gRPC's default policy


@pytest.fixture(scope="module")
def keepalive_env(migrated_env: dict[str, str]) -> dict[str, str]:
    return {**migrated_env, "PERSEUS_MODE": "pw-host", "PERSEUS_GRPC_KEEPALIVE_S": str(KEEPALIVE_S)}


@pytest.fixture(scope="module")
def core(keepalive_env: dict[str, str]) -> Iterator[Process]:
    """A core agreeing to 1 s pings."""
    with running_core(keepalive_env) as process:
        yield process


async def subscribed_stream(channel: aio.Channel, name: str) -> aio.UnaryStreamCall:
    call = stream_grpc.StreamServiceStub(channel).Subscribe(pb.SubscribeRequest(channels=[name]))
    first = await call.read()
    assert first.WhichOneof("kind") == "subscribed"
    return call


async def next_event(call: aio.UnaryStreamCall) -> pb.StreamEvent:
    async with asyncio.timeout(10):
        while True:
            response = await call.read()
            assert response is not aio.EOF, "the stream ended"
            if response.WhichOneof("kind") == "event":
                event: pb.StreamEvent = response.event
                return event
            if response.WhichOneof("kind") == "events":
                batch: pb.StreamEvent = response.events.events[0]
                return batch


async def test_an_idle_subscribe_stream_outlives_several_ping_periods(core: Process, publisher: EventPublisher) -> None:
    channel = prices_channel(fresh_symbol())
    name = f"prices:{channel.exchange}:{channel.symbol}"
    async with aio.insecure_channel(core.addr, options=channel_options(KEEPALIVE_S)) as grpc_channel:
        call = await subscribed_stream(grpc_channel, name)
        await asyncio.sleep(IDLE_S)  # nothing on the stream: only the client's pings cross the connection
        assert not call.done(), f"the idle stream ended: {await call.details()}"
        seq = await publish_prices(publisher, channel, range(1, 2))
        event = await next_event(call)  # the same stream still delivers
        assert (event.channel, event.seq) == (name, seq)
        call.cancel()


async def test_the_same_pings_against_grpcs_default_policy_get_goaway_too_many_pings(
    keepalive_env: dict[str, str],
) -> None:
    strict = {"PERSEUS_GRPC_KEEPALIVE_S": str(2 * GRPC_DEFAULT_MIN_PING_INTERVAL_S)}  # permits 300 s, the default
    with running_core(keepalive_env, **strict) as process:
        async with aio.insecure_channel(process.addr, options=channel_options(KEEPALIVE_S)) as grpc_channel:
            call = await subscribed_stream(grpc_channel, f"prices:sim:{fresh_symbol()}")
            with pytest.raises(aio.AioRpcError) as caught:
                async with asyncio.timeout(IDLE_S + 4):
                    await call.read()
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "too many pings" in (caught.value.details() or "").lower()
    assert connection_went_away(caught.value)  # what the gateways retry on


def streams_opened(gateway: Process) -> float:
    text = httpx.get(f"http://{gateway.addr}/metrics", timeout=5).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("perseus_ws_core_streams_opened_total ")
    )


async def test_a_ws_gateway_keeps_its_one_core_stream_through_idle_ping_periods(
    core: Process, keepalive_env: dict[str, str], key: str, publisher: EventPublisher
) -> None:
    channel = prices_channel(fresh_symbol())
    name = f"prices:{channel.exchange}:{channel.symbol}"
    with running_gateway("ws", keepalive_env, core.addr) as gateway:
        async with open_stream(gateway.addr, key) as ws:
            assert (await subscribe(ws, [name]))["type"] == "subscribed"
            await asyncio.sleep(IDLE_S)
            seq = await publish_prices(publisher, channel, range(1, 2))
            message = await recv(ws)
            assert (message["type"], message["channel"], message["seq"]) == ("price_update", name, seq)
        assert streams_opened(gateway) == 1  # never lost and reopened


async def test_an_idle_sdk_stream_outlives_several_ping_periods(core: Process, publisher: EventPublisher) -> None:
    channel = prices_channel(fresh_symbol())
    name = f"prices:{channel.exchange}:{channel.symbol}"
    async with perseus_sdk.connect(core.addr, keepalive_s=KEEPALIVE_S) as sdk_channel:
        responses = aiter(perseus_sdk.StreamServiceStub(sdk_channel).subscribe(perseus_sdk.SubscribeRequest([name])))
        first = await anext(responses)
        assert first.subscribed is not None
        next_response = asyncio.ensure_future(anext(responses))
        done, _ = await asyncio.wait([next_response], timeout=IDLE_S)  # idle: only the SDK's pings
        assert not done, f"the idle stream ended: {next_response.exception()!r}"
        seq = await publish_prices(publisher, channel, range(1, 2))
        async with asyncio.timeout(10):
            response = await next_response
        events = [response.event] if response.event is not None else list(response.events.events)
        assert (events[0].channel, events[0].seq) == (name, seq)
        await responses.aclose()
