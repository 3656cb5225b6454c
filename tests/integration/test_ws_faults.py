"""`perseus ws` under faults: a client that stops reading, a peer that stops answering, a core restart.

- Backpressure: a client that stops reading has events skipped (a seq gap it
  sees once it reads again) and is then closed with 4009, while a client on
  the same channel gets every event on time and the gateway's memory does not
  grow with what the slow one missed.
- Liveness: heartbeats arrive at the configured interval, each with a protocol
  ping; a peer that answers them stays, one that does not is closed (1011) and
  its connection slot released.
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


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One unmasked server frame from a raw socket: (opcode, payload); (-1, b"") at EOF."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    try:
        first, second = exactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(exactly(8), "big")
        return first & 0x0F, exactly(length)
    except EOFError:
        return -1, b""


def send_pong(sock: socket.socket, payload: bytes) -> None:
    """A client's (masked) pong echoing ``payload``."""
    mask = os.urandom(4)
    sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def test_each_heartbeat_carries_a_protocol_ping_and_only_an_unanswered_one_closes_with_1011(
    gateway: Process, key: str
) -> None:
    """The runtime's one heartbeat job pings every client (no keepalive task per connection): a peer that
    answers each ping stays connected across several ping timeouts, and the same peer, once it stops
    answering, is closed with 1011."""
    sock = raw_handshake(gateway.addr, key)
    sock.settimeout(10)
    rounds = 0
    heartbeats = 0
    began = time.monotonic()
    heartbeat_s = float(FAULT_ENV["PERSEUS_WS_HEARTBEAT_S"])
    timeout_s = float(FAULT_ENV["PERSEUS_WS_PING_TIMEOUT_S"])
    while rounds < 3:  # answered: three rounds, each well past its ping timeout by the next
        opcode, payload = read_frame(sock)
        assert opcode != 0x8, f"closed although every ping was answered: {payload!r}"
        assert opcode != -1, "the connection ended although every ping was answered"
        if opcode == 0x1:
            assert b'"heartbeat"' in payload
            heartbeats += 1
        elif opcode == 0x9:
            assert heartbeats == rounds + 1, "the ping comes right after its round's heartbeat"
            send_pong(sock, payload)
            rounds += 1
    assert time.monotonic() - began > 2 * heartbeat_s + timeout_s - 1
    code = None
    while True:  # silent from now on: the next round's ping goes unanswered
        opcode, payload = read_frame(sock)
        if opcode == 0x8:
            code = int.from_bytes(payload[:2], "big")
            break
        assert opcode != -1, "ended without a close frame"
    sock.close()
    assert code == 1011


async def test_a_client_close_ends_the_connection_at_once_and_gives_its_slot_back(
    gateway: Process, fault_env: dict[str, str]
) -> None:
    """The handler reads frames without Sanic's recv(); a close frame still ends it at once: the gateway closes
    the TCP connection after the closing handshake (the client does not wait out its close timeout) and the
    key's slot is free for the next connection (a free key holds five)."""
    free = make_key(fault_env, "free")
    for _ in range(7):
        async with open_stream(gateway.addr, free, close_timeout=8) as ws:
            assert (await subscribe(ws, ["prices:BTC-USD"]))["type"] == "subscribed"
            async with asyncio.timeout(4):  # beyond it, the client would be waiting for the server's TCP close
                await ws.close()
        assert ws.close_code == 1000


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
