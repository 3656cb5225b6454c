"""Helpers for tests of the WebSocket gateway: a real ``websockets`` client, events published into the core.

Events are published the way the core does (``EventPublisher``: seq assigned
in Redis, the serialized ``StreamEvent`` on the channel's sharded pub/sub),
on a fresh symbol per test, so tests never see each other's events. The gateway
refuses a symbol the core does not list (issue 16), so a fresh symbol is also
registered on ``sim`` in the session's database (``migrated_env`` says which).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

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


# The session's database, once a module migrated it (tests/integration/conftest.py: migrated_env).
SYMBOLS_DATABASE_URL: str | None = None


def register_symbols(database_url: str, symbols: Sequence[str], exchange: str = "sim") -> None:
    """Add ``symbols`` to ``exchange``'s list (what ``ListSymbols`` answers), as its feed would; from sync or
    async code (a thread of its own)."""

    async def insert() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "INSERT INTO symbols (exchange_id, symbol, base, quote)"
                " SELECT e.id, s, split_part(s, '-', 1), split_part(s, '-', 2)"
                " FROM exchanges e, unnest($1::text[]) AS s WHERE e.name = $2 ON CONFLICT DO NOTHING",
                list(symbols),
                exchange,
            )
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, insert()).result()


def fresh_symbol() -> str:
    symbol = f"W{secrets.token_hex(3).upper()}-USD"
    if SYMBOLS_DATABASE_URL is not None:
        register_symbols(SYMBOLS_DATABASE_URL, [symbol])
    return symbol


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


async def closed_with(ws: ClientConnection, within: float = 10.0) -> tuple[int, str] | None:
    """Read until the server closes; the close code and reason it sent."""
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None


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
