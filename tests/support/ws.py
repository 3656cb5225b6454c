"""Helpers for tests of the WebSocket gateway: a real ``websockets`` client, events published into the core.

Events are published the way the core does (``EventPublisher``: seq assigned
in Redis, the serialized ``StreamEvent`` on the channel's sharded pub/sub),
on a fresh symbol per test, so tests never see each other's events.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from core.adapters.events import Event, EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.domain.channels import Channel, ChannelFamily
from perseus.marketdata.v1 import prices_pb2, stream_service_pb2 as pb
from tests.support.processes import run_cli
from tests.support.redis_target import pipeline

RECV_TIMEOUT_S = 10.0


def make_key(env: dict[str, str], tier: str) -> str:
    result = run_cli(["keys", "create", "--tier", tier], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def key(migrated_env: dict[str, str]) -> str:
    """An internal key: no connection limit."""
    return make_key(migrated_env, "internal")


@pytest.fixture
async def publisher(redis_url: str, redis_prefix: str) -> AsyncIterator[EventPublisher]:
    """The core's own event publisher, on this session's Redis prefix."""
    client = pipeline(redis_url)
    yield EventPublisher(client, RedisKeys(redis_prefix))
    await client.aclose()


def fresh_symbol() -> str:
    return f"W{secrets.token_hex(3).upper()}-USD"


def prices_channel(symbol: str, exchange: str = "sim") -> Channel:
    return Channel(ChannelFamily.PRICES, exchange, symbol, None)


async def publish_prices(publisher: EventPublisher, channel: Channel, prices: range) -> int:
    """One ``price_update`` per price on ``channel``; returns the last seq."""
    name = f"prices:{channel.exchange}:{channel.symbol}"
    events = []
    for price in prices:
        feed = prices_pb2.PriceFeed(symbol=channel.symbol, price=f"{price}.5", volume="1", source=channel.exchange)
        events.append(Event(channel, pb.StreamEvent(channel=name, price_update=feed).SerializeToString()))
    last = await publisher.publish(events)
    return last[channel]


def stream_url(addr: str, key: str | None) -> str:
    return f"ws://{addr}/public/v1/stream" + (f"?apiKey={key}" if key else "")


def open_stream(addr: str, key: str | None, **kwargs: Any) -> Any:
    return connect(stream_url(addr, key), open_timeout=10, **kwargs)


async def recv(ws: ClientConnection, *, heartbeats: bool = False, within: float = RECV_TIMEOUT_S) -> dict[str, Any]:
    """The next message as JSON (heartbeats skipped unless asked for)."""
    async with asyncio.timeout(within):
        while True:
            message = json.loads(await ws.recv())
            if heartbeats or message.get("type") != "heartbeat":
                return message  # type: ignore[no-any-return]


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def subscribe(ws: ClientConnection, channels: list[str], **extra: Any) -> dict[str, Any]:
    await send(ws, {"action": "subscribe", "channels": channels, **extra})
    return await recv(ws)


async def events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [await recv(ws) for _ in range(count)]


def small_buffer_socket(addr: str) -> socket.socket:
    """A client socket whose receive buffer is tiny, so a client that stops reading backs up at once."""
    host, port = addr.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return sock
