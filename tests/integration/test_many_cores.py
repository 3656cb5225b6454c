"""Two cores, two REST gateways and two WebSocket gateways, each gateway given both cores; one process dies.

The topology of issue 15: core ``a`` is the ``exchange`` writer (sim, on ``BTC-USD``), core ``b`` a
``pw-host``; every gateway has ``PERSEUS_CORE_ADDR=a,b``. While REST clients poll both REST gateways and two
stream clients read (a raw WebSocket on ``ws2``, the SDK's ``LiveStream`` on ``ws1``), each process is killed
with SIGKILL in turn: core ``a``, then core ``b`` (each restarted after), then ``rest1``, then ``ws1``
(restarted: its ``LiveStream`` reconnects to it); last, both cores. What a user must see:

- REST: every answer of a surviving gateway is 200 or 503, none hangs past the deadline, and 200 comes back
  while a core is left; with every core down, 503 (never a hang);
- WS: with a core down, the streams of both gateways go on (their one upstream stream moves to the live core
  before the dead one is back: an event published after the kill arrives), the raw client on ``ws2`` is never
  disconnected, and every channel's seqs are consecutive unless a gap is said (``resume_gap`` / ``SeqGap``).

Events come from two sources: the sim writer's ``prices:BTC-USD``, and ``prices:<fresh symbol>`` published by
the test the way the core does, which keeps flowing while the writer is the core that is down.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from core.adapters.events import EventPublisher
from perseus_sdk import LiveEvent, LiveStream, SeqGap
from tests.support import ws as support
from tests.support.processes import GATEWAY_TEST_ENV, Process, free_port, grpc_serving, spawn, wait_until
from tests.support.ws import fresh_symbol, open_stream, prices_channel, publish_prices

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("many-cores")]
key = support.key
publisher = support.publisher

DEADLINE_S = 2.0
HTTP_TIMEOUT_S = DEADLINE_S + 3.0  # an answer later than this is a hang
RECOVER_S = DEADLINE_S + 8.0  # the longest a phase waits to see 200 again / an event on the live core
RECONNECT_S = 2.5  # the gateways' longest reconnect backoff (core_client.channel_options) and a margin
PUBLISH_EVERY_S = 0.05
SIM = "prices:BTC-USD"


def core_env(env: dict[str, str], addr: str, name: str, mode: str) -> dict[str, str]:
    return {
        **env,
        "PERSEUS_CORE_ADDR": addr,
        "PERSEUS_MODE": mode,
        "PERSEUS_INSTANCE_ID": f"many-{name}",
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_WRITER_LEASE_MS": "3000",
        "PERSEUS_SIM_SYMBOLS": "BTC-USD",
        "PERSEUS_SIM_TRADES_PER_S": "20",
        "PERSEUS_SIM_BACKFILL_MINUTES": "0",
    }


def start_core(env: dict[str, str]) -> Process:
    addr = env["PERSEUS_CORE_ADDR"]
    process = spawn(["core"], env, addr)
    wait_until(lambda: grpc_serving(addr), process, f"core {env['PERSEUS_INSTANCE_ID']}")
    return process


def start_gateway(kind: str, env: dict[str, str], addr: str) -> Process:
    variable = "PERSEUS_REST_ADDR" if kind == "rest" else "PERSEUS_WS_ADDR"
    process = spawn([kind], {**(GATEWAY_TEST_ENV["ws"] if kind == "ws" else {}), **env, variable: addr}, addr)
    wait_until(lambda: healthy(addr), process, f"perseus {kind} at {addr}")
    return process


def healthy(addr: str) -> bool:
    try:
        return httpx.get(f"http://{addr}/health", timeout=3.0).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Topology:
    env: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)
    core_envs: dict[str, dict[str, str]] = field(default_factory=dict)

    def addr(self, name: str) -> str:
        return self.processes[name].addr

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.proc.kill()
        process.proc.wait()

    def restart_core(self, name: str) -> None:
        self.processes.pop(name).close()
        self.processes[name] = start_core(self.core_envs[name])

    def restart_gateway(self, name: str) -> None:
        old = self.processes.pop(name)
        old.close()
        self.processes[name] = start_gateway(name[:-1], self.env, old.addr)


@pytest.fixture(scope="module")
def topology(migrated_env: dict[str, str]) -> Iterator[Topology]:
    top = Topology(migrated_env)
    try:
        for name, mode in (("a", "exchange"), ("b", "pw-host")):
            top.core_envs[name] = core_env(migrated_env, f"127.0.0.1:{free_port()}", name, mode)
        top.processes["a"] = start_core(top.core_envs["a"])  # the writer first: b is a pw-host either way
        top.processes["b"] = start_core(top.core_envs["b"])
        cores = f"{top.core_envs['a']['PERSEUS_CORE_ADDR']},{top.core_envs['b']['PERSEUS_CORE_ADDR']}"
        top.env = {**migrated_env, "PERSEUS_CORE_ADDR": cores, "PERSEUS_CORE_DEADLINE_S": str(DEADLINE_S)}
        for name in ("rest1", "rest2", "ws1", "ws2"):
            top.processes[name] = start_gateway(name[:-1], top.env, f"127.0.0.1:{free_port()}")
        yield top
    finally:
        for process in top.processes.values():
            process.close()


@dataclass
class RestLog:
    """Every answer a REST client got from one gateway: (time, status), or (time, the transport error)."""

    answers: list[tuple[float, int | str]] = field(default_factory=list)

    def ok_since(self, since: float) -> bool:
        return any(at > since and status == 200 for at, status in self.answers)

    def since(self, when: float) -> list[int | str]:
        return [status for at, status in self.answers if at > when]

    def unexpected(self) -> list[tuple[float, int | str]]:
        return [(at, status) for at, status in self.answers if status not in (200, 503)]


async def poll_rest(addr: str, key: str, log: RestLog) -> None:
    async with httpx.AsyncClient(base_url=f"http://{addr}", timeout=HTTP_TIMEOUT_S) as client:
        while True:
            try:
                response = await client.get(
                    "/public/v1/prices/latest", params={"symbols": "BTC-USD"}, headers={"X-API-Key": key}
                )
                status: int | str = response.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            log.answers.append((time.monotonic(), status))
            await asyncio.sleep(0.02)


@dataclass
class Received:
    """What one stream client saw, per channel: events as (time, seq), and gaps as (after_seq, next_seq)."""

    events: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    gaps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    closed: str | None = None

    def event(self, channel: str, seq: int) -> None:
        self.events.setdefault(channel, []).append((time.monotonic(), seq))

    def since(self, channel: str, when: float) -> bool:
        return any(at > when for at, _ in self.events.get(channel, []))

    def unexplained(self, channel: str) -> list[tuple[int, int]]:
        """Each step between two seqs that is neither +1 nor a gap the client was told about."""
        seqs = [seq for _, seq in self.events.get(channel, [])]
        told = set(self.gaps.get(channel, []))
        return [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1 and (a, b) not in told]


async def read_raw(ws: ClientConnection, received: Received) -> None:
    last: dict[str, int] = {}
    async for frame in ws:
        message: dict[str, Any] = json.loads(frame)
        channel = message.get("channel")
        if message.get("type") == "resume_gap" and isinstance(channel, str) and channel in last:
            received.gaps.setdefault(channel, []).append((last[channel], int(message["first_available_seq"])))
        elif isinstance(channel, str) and "seq" in message:
            last[channel] = int(message["seq"])
            received.event(channel, last[channel])
    received.closed = f"{ws.close_code} {ws.close_reason}"


async def read_sdk(stream: LiveStream, received: Received) -> None:
    async for item in stream:
        if isinstance(item, SeqGap):
            received.gaps.setdefault(item.channel, []).append((item.after_seq, item.next_seq))
        elif isinstance(item, LiveEvent):
            received.event(item.channel, item.seq)


async def keep_publishing(publisher: EventPublisher, symbol: str) -> None:
    for price in itertools.count(1):
        await publish_prices(publisher, prices_channel(symbol), range(price, price + 1))
        await asyncio.sleep(PUBLISH_EVERY_S)


async def eventually(what: str, check: Any, within: float = RECOVER_S) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.05)


@pytest.fixture
async def background() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_any_one_process_dies_and_clients_carry_on(
    topology: Topology, key: str, publisher: EventPublisher, background: list[asyncio.Task[None]]
) -> None:
    symbol = fresh_symbol()
    fresh = f"prices:{symbol}"
    rest = {name: RestLog() for name in ("rest1", "rest2")}
    pollers = {name: asyncio.create_task(poll_rest(topology.addr(name), key, log)) for name, log in rest.items()}
    background.extend(pollers.values())
    background.append(asyncio.create_task(keep_publishing(publisher, symbol)))

    raw, sdk = Received(), Received()
    ws = await open_stream(topology.addr("ws2"), key)
    reply = await support.subscribe(ws, [SIM, fresh])
    assert reply["type"] == "subscribed", reply
    background.append(asyncio.create_task(read_raw(ws, raw)))
    stream = LiveStream(f"ws://{topology.addr('ws1')}", key, max_backoff_s=0.5)
    await stream.__aenter__()
    try:
        await stream.subscribe(SIM, fresh)
        background.append(asyncio.create_task(read_sdk(stream, sdk)))
        start = time.monotonic()
        await eventually("both streams carry events", lambda: raw.since(fresh, start) and sdk.since(fresh, start))
        await eventually("both REST gateways answer 200", lambda: all(log.ok_since(start) for log in rest.values()))

        for core in ("a", "b"):  # each core in turn: the other carries every gateway
            topology.kill(core)
            killed = time.monotonic()
            for client, received in (("ws2", raw), ("ws1", sdk)):  # before the dead core is back
                await eventually(
                    f"core {core} killed: {client} streams from the live core",
                    lambda received=received, killed=killed: received.since(fresh, killed),
                )
            for name, log in rest.items():
                await eventually(
                    f"core {core} killed: {name} answers 200", lambda log=log, killed=killed: log.ok_since(killed)
                )
            await asyncio.to_thread(topology.restart_core, core)
            await asyncio.sleep(RECONNECT_S)  # the gateways connect to it again before the other one goes

        pollers["rest1"].cancel()  # its client loses its gateway; the other gateway's clients see nothing
        topology.kill("rest1")
        killed = time.monotonic()
        await asyncio.sleep(DEADLINE_S)
        assert rest["rest2"].ok_since(killed)

        topology.kill("ws1")  # ws2's client is untouched; ws1's LiveStream reconnects once ws1 is back
        killed = time.monotonic()
        await eventually("ws1 killed: ws2 goes on", lambda: raw.since(fresh, killed))
        await asyncio.to_thread(topology.restart_gateway, "ws1")
        restarted = time.monotonic()
        await eventually("ws1 back: its LiveStream resumes", lambda: sdk.since(fresh, restarted))
        assert stream.reconnects >= 1

        for core in ("a", "b"):  # every core down: 503 within the deadline, never a hang
            topology.kill(core)
        killed = time.monotonic()
        await eventually("every core down: rest2 answers", lambda: len(rest["rest2"].since(killed)) >= 3)
        assert set(rest["rest2"].since(killed)[1:]) == {503}  # the first may have been answered just before
        assert raw.closed is None, f"the raw client on ws2 was disconnected: {raw.closed}"
    finally:
        await stream.aclose()
        await ws.close()

    for name, log in rest.items():
        assert not log.unexpected(), f"{name} answered other than 200/503: {log.unexpected()[:5]}"
    for client, received in (("ws2 (raw)", raw), ("ws1 (LiveStream)", sdk)):
        for channel in (fresh, SIM):
            assert not received.unexplained(channel), f"{client} {channel}: silent gaps {received.unexplained(channel)}"
    assert len(raw.events[SIM]) > 10  # the writer's own events flowed too
