"""`perseus ws` under faults: a client that stops reading, a peer that stops answering, a core restart.

- Backpressure: a client that stops reading has events skipped (a seq gap it
  sees once it reads again) and is then closed with 4009, while a client on
  the same channel gets every event on time and the gateway's memory does not
  grow with what the slow one missed.
- Liveness: heartbeats arrive at the configured interval; a peer that does not
  answer protocol pings is closed and its connection slot released.
- Core restart: clients stay connected, the gateway re-subscribes upstream and
  resumes, and the clients see every event with no gap.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from core.adapters.events import EventPublisher
from tests.support import ws as support
from tests.support.processes import Process, free_port, grpc_serving, running_gateway, spawn, wait_until
from tests.support.ws import (
    events,
    fresh_symbol,
    make_key,
    open_stream,
    prices_channel,
    publish_prices,
    recv,
    small_buffer_socket,
    stream_url,
    subscribe,
)

pytestmark = pytest.mark.integration
key = support.key  # fixtures: an internal key, the core's event publisher
publisher = support.publisher

SLOW_CLIENT_S = 2.0
PATIENT_SLOW_CLIENT_S = 10.0  # long enough for the slow client to miss megabytes before it is closed
EVENT_BYTES = 250  # about the size of one price_update frame here
FAULT_ENV = {
    "PERSEUS_WS_HEARTBEAT_S": "2",
    "PERSEUS_WS_PING_TIMEOUT_S": "2",
    "PERSEUS_WS_SLOW_CLIENT_S": str(SLOW_CLIENT_S),
    "PERSEUS_WS_LEASE_S": "3",
}


@pytest.fixture(scope="module")
def fault_env(migrated_env: dict[str, str]) -> dict[str, str]:
    return {**migrated_env, **FAULT_ENV}


@pytest.fixture(scope="module")
def gateway(fault_env: dict[str, str], core: Process) -> Iterator[Process]:
    with running_gateway("ws", fault_env, core.addr) as process:
        yield process


@pytest.fixture(scope="module")
def patient_gateway(fault_env: dict[str, str], core: Process) -> Iterator[Process]:
    """Protocol pings every 30 s: a client that stops reading meets the slow-client rule first."""
    env = {
        **fault_env,
        "PERSEUS_WS_HEARTBEAT_S": "30",
        "PERSEUS_WS_PING_TIMEOUT_S": "20",
        "PERSEUS_WS_SLOW_CLIENT_S": str(PATIENT_SLOW_CLIENT_S),
    }
    with running_gateway("ws", env, core.addr) as process:
        yield process


def metric(gateway: Process, name: str) -> float:
    text = httpx.get(f"http://{gateway.addr}/metrics", timeout=5).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, name
    return float(found.group(1))


async def until(check: object, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# --- backpressure ------------------------------------------------------------------------------


async def test_a_client_that_stops_reading_is_skipped_then_closed_and_others_are_not_delayed(
    patient_gateway: Process, key: str, publisher: EventPublisher
) -> None:
    gateway = patient_gateway
    symbol = fresh_symbol()
    name = f"prices:{symbol}"
    channel = prices_channel(symbol)
    rss_before = psutil.Process(gateway.pid).memory_info().rss
    slow = await connect(stream_url(gateway.addr, key), sock=small_buffer_socket(gateway.addr), max_queue=1)
    async with open_stream(gateway.addr, key) as fast:
        await subscribe(slow, [name])
        await subscribe(fast, [name])
        fast_seqs: list[int] = []
        fast_lateness: list[float] = []

        async def read_fast() -> None:
            while True:
                message = await recv(fast)
                fast_seqs.append(message["seq"])
                fast_lateness.append(time.time() - float(message["data"]["volume"]))

        reader = asyncio.create_task(read_fast())
        try:
            # 1. The slow client reads nothing: events pile up until the gateway skips it.
            skipped_before = metric(gateway, "perseus_ws_skipped_events_total")
            while metric(gateway, "perseus_ws_skipped_events_total") == skipped_before:
                await publish_stamped(publisher, channel, 500)
            # 2. It reads again: what it gets has a seq gap, and it is still connected.
            seen = [m["seq"] async for m in drain(slow, quiet_s=0.5)]
            await publish_stamped(publisher, channel, 1)
            seen.append((await recv(slow))["seq"])
            assert any(b > a + 1 for a, b in itertools.pairwise(seen)), "no seq gap seen"
            assert seen == sorted(seen)
            # 3. It stops reading for longer than the grace period while events flow: closed with 4009.
            closes_before = metric(gateway, "perseus_ws_slow_closes_total")
            skipped_before = metric(gateway, "perseus_ws_skipped_events_total")
            deadline = time.monotonic() + PATIENT_SLOW_CLIENT_S + 10
            while metric(gateway, "perseus_ws_slow_closes_total") == closes_before:
                assert time.monotonic() < deadline, "the slow client was never closed"
                await publish_stamped(publisher, channel, 500)
                await asyncio.sleep(0.05)
            missed_bytes = (metric(gateway, "perseus_ws_skipped_events_total") - skipped_before) * EVENT_BYTES
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await slow.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4009
            # The fast client got every event, in order, promptly.
            last = await publish_stamped(publisher, channel, 1)
            await until(lambda: fast_seqs and fast_seqs[-1] == last)
        finally:
            reader.cancel()
            await slow.close()
    assert fast_seqs == list(range(fast_seqs[0], fast_seqs[-1] + 1))
    assert max(fast_lateness) < 2.0
    # What the slow client missed (megabytes) never accumulated in the gateway.
    grown = psutil.Process(gateway.pid).memory_info().rss - rss_before
    assert missed_bytes > 3_000_000 and grown < missed_bytes / 2, (grown, missed_bytes)


async def publish_stamped(publisher: EventPublisher, channel: object, count: int) -> int:
    """``count`` events whose volume is the publish time (to measure lateness); the last seq."""
    events_ = []
    from core.adapters.events import Event  # local: only this helper needs the raw event
    from perseus.marketdata.v1 import prices_pb2, stream_service_pb2 as pb

    name = f"prices:{channel.exchange}:{channel.symbol}"  # type: ignore[attr-defined]
    now = f"{time.time():.6f}"
    for i in range(count):
        feed = prices_pb2.PriceFeed(symbol=channel.symbol, price=str(i + 1), volume=now, source="sim")  # type: ignore[attr-defined]
        events_.append(Event(channel, pb.StreamEvent(channel=name, price_update=feed).SerializeToString()))  # type: ignore[arg-type]
    last = await publisher.publish(events_)
    return last[channel]  # type: ignore[index]


async def drain(ws: object, *, quiet_s: float) -> AsyncIterator[dict]:  # type: ignore[type-arg]
    """Every message until none arrives for ``quiet_s``."""
    while True:
        try:
            message = await recv(ws, within=quiet_s)  # type: ignore[arg-type]
        except TimeoutError:
            return
        yield message


# --- liveness ----------------------------------------------------------------------------------


async def test_heartbeats_arrive_at_the_configured_interval(gateway: Process, key: str) -> None:
    async with open_stream(gateway.addr, key) as ws:
        beat = await recv(ws, heartbeats=True, within=5)
    assert beat["type"] == "heartbeat"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", beat["timestamp"])


def raw_handshake(addr: str, key: str) -> socket.socket:
    """Open a websocket by hand; the returned socket never answers a ping."""
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /public/v1/stream?apiKey={key} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_a_peer_that_does_not_answer_pings_is_closed_and_its_slot_released(
    gateway: Process, fault_env: dict[str, str]
) -> None:
    free = make_key(fault_env, "free")
    silent = [raw_handshake(gateway.addr, free) for _ in range(5)]
    await until(lambda: metric(gateway, "perseus_ws_connections") == 5)  # their slots are taken
    async with open_stream(gateway.addr, free) as sixth:
        with pytest.raises(ConnectionClosed) as closed:
            await recv(sixth)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008

    def ended(sock: socket.socket) -> bool:
        sock.settimeout(10)
        try:
            while sock.recv(65536):
                pass
        except (ConnectionResetError, TimeoutError):
            return False
        return True

    results = await asyncio.gather(*(asyncio.to_thread(ended, sock) for sock in silent))
    assert all(results), "a silent peer was not closed"
    for sock in silent:
        sock.close()
    async with open_stream(gateway.addr, free) as ws:
        assert (await subscribe(ws, ["prices:BTC-USD"]))["type"] == "subscribed"


# --- core restart ------------------------------------------------------------------------------


async def test_clients_stay_connected_across_a_core_restart_and_miss_nothing(
    fault_env: dict[str, str], key: str, publisher: EventPublisher
) -> None:
    addr = f"127.0.0.1:{free_port()}"

    def start_core() -> Process:
        process = spawn(["core"], {**fault_env, "PERSEUS_CORE_ADDR": addr}, addr)
        wait_until(lambda: grpc_serving(addr), process, "perseus core")
        return process

    core = start_core()
    try:
        with running_gateway("ws", fault_env, addr) as gateway:
            symbol = fresh_symbol()
            name = f"prices:{symbol}"
            channel = prices_channel(symbol)
            async with open_stream(gateway.addr, key) as ws:
                await subscribe(ws, [name])
                first = await publish_prices(publisher, channel, range(1, 4))
                before = [e["seq"] for e in await events(ws, 3)]
                core.close()
                during = await publish_prices(publisher, channel, range(4, 9))  # while no core runs
                core = start_core()
                after = [e["seq"] for e in await events(ws, 5)]
                last = await publish_prices(publisher, channel, range(9, 11))
                live = [e["seq"] for e in await events(ws, 2)]
                assert metric(gateway, "perseus_ws_core_streams_opened_total") >= 2
    finally:
        core.close()
    assert before + after + live == list(range(first - 2, last + 1))
    assert after[-1] == during
