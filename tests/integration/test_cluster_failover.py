"""A Redis Cluster master dies under load: streams, REST reads, shared rate limits and the writer carry on.

Issue 15, deliverable 3. A private 3-master / 3-replica :class:`LocalRedisCluster` (2 s node timeout; never the
session's cluster, since a master is killed) serves the topology of ``test_many_cores``: core ``a`` is the
``exchange`` writer (the simulated exchange), core ``b`` a ``pw-host``, two REST and two WebSocket gateways
are given both cores. Every process has ``PERSEUS_REDIS_URL`` pointing at *the master that is killed*: a
process learns the whole topology when it starts, so losing the node it was told about must not matter.

The master killed owns the writer lease (the ``{exchanges}`` slot); the names are chosen so that it also owns
the sim writer's price channel and cache (``{sim:<symbol>}``), one of the three channels the test publishes
to itself (one per master, as the core does, through ``EventPublisher``) and the rate-limit counters of the
two limited keys (``{apikey:<id>}``: their ids are picked to land there). While a raw WebSocket client (on
``ws2``) and the SDK's ``LiveStream`` (on ``ws1``) stream all four channels and REST clients read latest
prices from both REST gateways, the master gets SIGKILL. What a user must see:

- every client's seqs per channel are consecutive, or the gap is said (``resume_gap`` / ``SeqGap``); events
  published after the kill arrive on every channel, the killed master's included; no seq carries another
  event than the one published with it (the hole a promoted replica's lost ``INCRBY`` would leave);
- REST answers are 200, or 503 / 429 with the contract's error body, none later than the deadline; 200 comes
  back, and from the shared (Redis) limiter again, not only from its per-instance fallback;
- after the failover the limit is shared again: one burst split across both REST gateways admits exactly
  what is left of the key's window in Redis, and the next request is refused;
- the writer keeps its lease or takes it again (the lease names core ``a``): new ticks are stored in
  PostgreSQL, ``GetStatus`` of both cores shows every component (``writer:sim`` included) up, and a "writer
  lease lost" is followed by a new term;
- all of it within :data:`AFTER_PROMOTION_S` of the cluster's own failover (the killed master's replica
  saying ``ROLE`` master, timed from the kill).

Recovery times are printed (``pytest -s``) and put in the assertion messages: from the kill to the replica's
promotion, to the first event of each channel on each client (those of the killed master marked), and to the
first REST 200 counted by the shared limiter on each gateway.

How "counted by the shared limiter" is told apart from the fail-open per-instance limit: the polling key's
Redis counter is raised to :data:`PRESET_USED` for the windows the test spans, so an answer from Redis says
``X-RateLimit-Remaining <= limit - PRESET_USED``, while the local fallback, counting from zero, says more.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from redis.asyncio.cluster import RedisCluster
from websockets.asyncio.client import ClientConnection

from common import redis_clients
from common.resp_cluster import slot_of
from core.adapters.events import EventPublisher
from core.adapters.redis_keys import RedisKeys
from perseus.marketdata.v1 import market_data_service_pb2 as md_pb2, market_data_service_pb2_grpc as md_grpc
from perseus_cli.devstack.redis_cluster import ClusterNode, LocalRedisCluster
from perseus_sdk import LiveEvent, LiveStream, SeqGap
from tests.support import ws as support
from tests.support.databases import scratch_database
from tests.support.processes import GATEWAY_TEST_ENV, Process, free_port, grpc_serving, run_cli, spawn, wait_until
from tests.support.ws import fresh_symbol, open_stream, prices_channel, publish_prices, register_symbols

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cluster-failover"), pytest.mark.timeout(170)]

PREFIX = "perseus-failover:"
DEADLINE_S = 2.0
HTTP_TIMEOUT_S = DEADLINE_S + 3.0  # an answer later than this is a hang
RECOVER_S = 25.0  # the longest the test waits for anything after the kill (node timeout 2 s + election + retries)
PUBLISH_EVERY_S = 0.05
POLL_EVERY_S = 0.05  # per REST gateway: ~40 requests/s in all, far below the pro key's 10,000 a minute
PRO_LIMIT, FREE_LIMIT = 10_000, 1_000
PRESET_USED = 5_000  # the polling key's Redis counter, so that a Redis answer shows remaining <= 5,000
HEAVY_COST = 10  # candles?limit=1000
BURST = 20
STEADY_S = 1.0
# The most a client may lag the cluster's own failover: the hub's and the clients' refresh backoff (up to 2 s)
# and a margin. What comes earlier than the promotion (a channel of a live master, the local limiter) is fine.
AFTER_PROMOTION_S = 3.0


Slots = list[tuple[int, int, int]]  # (first slot, last slot, master's client port)


def slot_table(node: ClusterNode) -> Slots:
    return [(int(s[0]), int(s[1]), int(s[2][1])) for s in node.client().execute_command("CLUSTER", "SLOTS")]


def owner_port(slots: Slots, key: str) -> int:
    """The client port of the master owning ``key``'s slot."""
    slot = slot_of(key)
    return next(port for first, last, port in slots if first <= slot <= last)


def name_on(slots: Slots, port: int, make: Any) -> Any:
    """The first of ``make(0), make(1), ...`` whose hash tag (``make(i)[1]``) lands on the master at ``port``."""
    for i in itertools.count():
        value, tag = make(i)
        if owner_port(slots, tag) == port:
            return value
    raise AssertionError("unreachable")


@dataclass
class Stack:
    cluster: LocalRedisCluster
    victim: ClusterNode
    survivor: ClusterNode  # a node the test's own clients use (the processes use the victim)
    env: dict[str, str]
    db_url: str
    sim_symbol: str
    fresh: dict[int, str]  # master port -> a symbol whose channel lives there
    keys: dict[str, tuple[str, int]]  # "internal" / "pro" / "free" -> (key, id)
    processes: dict[str, Process] = field(default_factory=dict)

    def addr(self, name: str) -> str:
        return self.processes[name].addr


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    """Started on the main thread: its nodes die with the thread that started them."""
    with LocalRedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
async def private_db(admin_database_url: str) -> AsyncIterator[str]:
    """A database of this module alone: key ids are chosen by restarting their sequence."""
    async with scratch_database(admin_database_url, f"perseus_failover_{secrets.token_hex(4)}") as url:
        yield url


async def make_key_with_id(env: dict[str, str], db_url: str, tier: str, key_id: int) -> tuple[str, int]:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(f"ALTER TABLE api_keys ALTER COLUMN id RESTART WITH {int(key_id)}")
    finally:
        await conn.close()
    key = support.make_key(env, tier)
    return key, key_id


def start_core(env: dict[str, str], name: str, mode: str) -> Process:
    addr = f"127.0.0.1:{free_port()}"
    env = {**env, "PERSEUS_CORE_ADDR": addr, "PERSEUS_MODE": mode, "PERSEUS_INSTANCE_ID": f"failover-{name}"}
    process = spawn(["core"], env, addr)
    wait_until(lambda: grpc_serving(addr), process, f"core {name}")
    return process


def healthy(addr: str) -> bool:
    try:
        return httpx.get(f"http://{addr}/health", timeout=3.0).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
async def stack(cluster: LocalRedisCluster, private_db: str) -> AsyncIterator[Stack]:
    slots = slot_table(cluster.masters()[0])
    victim_port = owner_port(slots, "{exchanges}")  # the writer lease's master
    victim = next(node for node in cluster.nodes if node.port == victim_port)
    survivor = next(node for node in cluster.masters() if node is not victim)
    sim_symbol = name_on(slots, victim_port, lambda i: (s := fresh_symbol(), f"{{sim:{s}}}"))
    fresh = {
        master.port: name_on(slots, master.port, lambda i: (s := fresh_symbol(), f"{{sim:{s}}}"))
        for master in cluster.masters()
    }
    env = {
        "PERSEUS_DATABASE_URL": private_db,
        "PERSEUS_REDIS_URL": victim.url,
        "PERSEUS_REDIS_PREFIX": PREFIX,
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_LOG_FORMAT": "text",
        "PERSEUS_SIM_SYMBOLS": sim_symbol,
        "PERSEUS_SIM_TRADES_PER_S": "20",
        "PERSEUS_SIM_BACKFILL_MINUTES": "0",
    }
    result = run_cli(["migrate"], env)
    assert result.returncode == 0, result.stderr
    register_symbols(private_db, list(fresh.values()))  # the gateways refuse channels of unlisted symbols
    keys = {"internal": await make_key_with_id(env, private_db, "internal", 1)}
    for tier, start in (("pro", 100), ("free", 1000)):
        key_id = name_on(slots, victim_port, lambda i, start=start: (start + i, f"{{apikey:{start + i}}}"))
        keys[tier] = await make_key_with_id(env, private_db, tier, key_id)
    top = Stack(cluster, victim, survivor, env, private_db, sim_symbol, fresh, keys)
    try:
        top.processes["a"] = start_core(env, "a", "exchange")  # the writer first
        top.processes["b"] = start_core(env, "b", "pw-host")
        cores = f"{top.addr('a')},{top.addr('b')}"
        gateway_env = {**env, "PERSEUS_CORE_ADDR": cores, "PERSEUS_CORE_DEADLINE_S": str(DEADLINE_S)}
        for name in ("rest1", "rest2", "ws1", "ws2"):
            kind = name[:-1]
            addr = f"127.0.0.1:{free_port()}"
            variable = "PERSEUS_REST_ADDR" if kind == "rest" else "PERSEUS_WS_ADDR"
            top.processes[name] = spawn([kind], {**GATEWAY_TEST_ENV[kind], **gateway_env, variable: addr}, addr)
        for name in ("rest1", "rest2", "ws1", "ws2"):
            process = top.processes[name]
            wait_until(lambda process=process: healthy(process.addr), process, f"perseus {name}")
        yield top
    finally:
        for process in top.processes.values():
            process.close()


# ---------------------------------------------------------------------------------------------- what clients saw


@dataclass
class Answer:
    at: float
    status: int | str  # the HTTP status, or the transport error's name
    took: float = 0.0
    remaining: int | None = None
    code: str | None = None  # the contract error body's code


@dataclass
class RestLog:
    answers: list[Answer] = field(default_factory=list)

    def shared_ok_since(self, since: float) -> float | None:
        """When the first 200 to a request sent after ``since`` counted by Redis's limiter came (remaining at most
        the preset's)."""
        for answer in self.answers:
            if answer.at - answer.took > since and answer.status == 200 and answer.remaining is not None:
                if answer.remaining <= PRO_LIMIT - PRESET_USED:
                    return answer.at
        return None

    def unexpected(self) -> list[Answer]:
        """Answers outside the contract: a transport error or timeout (a hang), another status, a bad body."""
        allowed = {503: "SERVICE_UNAVAILABLE", 429: "RATE_LIMIT_EXCEEDED"}
        return [a for a in self.answers if a.status != 200 and (a.status not in allowed or a.code != allowed[a.status])]  # type: ignore[index]


async def poll_rest(addr: str, key: str, symbol: str, log: RestLog) -> None:
    async with httpx.AsyncClient(base_url=f"http://{addr}", timeout=HTTP_TIMEOUT_S) as client:
        while True:
            sent = time.monotonic()
            try:
                response = await client.get(
                    "/public/v1/prices/latest", params={"symbols": symbol}, headers={"X-API-Key": key}
                )
            except httpx.HTTPError as exc:
                log.answers.append(Answer(time.monotonic(), type(exc).__name__, time.monotonic() - sent))
            else:
                remaining = response.headers.get("x-ratelimit-remaining")
                code = None
                if response.status_code != 200:
                    try:
                        code = response.json()["error"]["code"]
                    except (ValueError, KeyError, TypeError):
                        code = f"no contract body: {response.text[:100]!r}"
                at = time.monotonic()
                log.answers.append(
                    Answer(at, response.status_code, at - sent, int(remaining) if remaining else None, code)
                )
            await asyncio.sleep(POLL_EVERY_S)


@dataclass
class Received:
    """What one stream client saw, per channel: events as (time, seq, price), gaps as (after_seq, next_seq)."""

    events: dict[str, list[tuple[float, int, str]]] = field(default_factory=dict)
    gaps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    closed: str | None = None

    def event(self, channel: str, seq: int, price: str) -> None:
        self.events.setdefault(channel, []).append((time.monotonic(), seq, price))

    def last_seq(self, channel: str) -> int:
        return max((seq for _, seq, _ in self.events.get(channel, [])), default=0)

    def first_after(self, channel: str, when: float, above_seq: int) -> float | None:
        """When the first event newer than ``above_seq`` that arrived after ``when`` came."""
        return next((at for at, seq, _ in self.events.get(channel, []) if at > when and seq > above_seq), None)

    def missing(self, channel: str, seqs: list[int]) -> list[int]:
        """Those of ``seqs`` (published) between the first and the last seq received that never came and that
        no gap announced."""
        got = {seq for _, seq, _ in self.events.get(channel, [])}
        told = self.gaps.get(channel, [])
        first, last = min(got, default=0), max(got, default=0)
        return [s for s in seqs if first < s < last and s not in got and not any(a < s < b for a, b in told)]

    def unexplained(self, channel: str) -> list[tuple[int, int]]:
        """Each step between two seqs that is neither +1 nor a gap the client was told about."""
        seqs = [seq for _, seq, _ in self.events.get(channel, [])]
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
            received.event(channel, last[channel], str(message.get("data", {}).get("price")))
    received.closed = f"{ws.close_code} {ws.close_reason}"


async def read_sdk(stream: LiveStream, received: Received) -> None:
    async for item in stream:
        if isinstance(item, SeqGap):
            received.gaps.setdefault(item.channel, []).append((item.after_seq, item.next_seq))
        elif isinstance(item, LiveEvent):
            received.event(item.channel, item.seq, str(item.data.get("price")))


@dataclass
class Published:
    """What the test's publisher got back per channel: (time, price, seq), and the failures (time, error)."""

    sent: dict[str, list[tuple[float, str, int]]] = field(default_factory=dict)
    failed: list[tuple[float, str]] = field(default_factory=list)


async def keep_publishing(publisher: EventPublisher, symbol: str, published: Published) -> None:
    channel = f"prices:{symbol}"
    for price in itertools.count(1):
        try:
            async with asyncio.timeout(5.0):
                seq = await publish_prices(publisher, prices_channel(symbol), range(price, price + 1))
        except Exception as exc:  # the master is down: the event is lost or half-sent; try the next one
            published.failed.append((time.monotonic(), f"{channel}: {exc!r}"))
        else:
            published.sent.setdefault(channel, []).append((time.monotonic(), f"{price}.5", seq))
        await asyncio.sleep(PUBLISH_EVERY_S)


async def eventually(what: str, check: Any, within: float = RECOVER_S) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.05)
    return result


@pytest.fixture
async def background() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def counter_key(key_id: int, window: int) -> str:
    return f"{PREFIX}ratelimit:{{apikey:{key_id}}}:{window}"


async def preset_counter(client: RedisCluster, key_id: int, used: int, windows: int) -> None:
    """Spend ``used`` units of key ``key_id`` in Redis, in this minute's window and the next ones."""
    now = int(time.time() // 60)
    for window in range(now, now + windows):
        await client.set(counter_key(key_id, window), used, px=(windows + 1) * 60_000)


async def components(core: Process) -> dict[str, int]:
    """The core's long-lived tasks and their states, from ``GetStatus``."""

    def call() -> dict[str, int]:
        with grpc.insecure_channel(core.addr) as channel:
            reply = md_grpc.MarketDataServiceStub(channel).GetStatus(md_pb2.GetStatusRequest(), timeout=2)
        return {c.name: c.state for c in reply.components}

    return await asyncio.to_thread(call)


async def last_stored_tick(db_url: str, symbol: str) -> float:
    conn = await asyncpg.connect(db_url)
    try:
        value = await conn.fetchval(
            "SELECT extract(epoch FROM max(ingested_at)) FROM price_feeds WHERE symbol = $1 AND source = 'sim'", symbol
        )
    finally:
        await conn.close()
    return float(value or 0)


# ---------------------------------------------------------------------------------------------------- the test


async def test_a_master_dies_under_load_and_clients_carry_on(
    stack: Stack, background: list[asyncio.Task[None]]
) -> None:
    victim = stack.victim.port
    sim = f"prices:{stack.sim_symbol}"
    fresh = {port: f"prices:{symbol}" for port, symbol in stack.fresh.items()}
    channels = [sim, *fresh.values()]
    on_victim = [sim, fresh[victim]]
    internal, (pro, pro_id), (free, free_id) = stack.keys["internal"][0], stack.keys["pro"], stack.keys["free"]
    redis = redis_clients.redis_py(stack.survivor.url, "cluster", socket_timeout=2.0, socket_connect_timeout=2.0)
    assert isinstance(redis, RedisCluster)
    publisher_pipe = redis_clients.pipeline(stack.survivor.url, "cluster", client_name="failover-test")
    publisher = EventPublisher(publisher_pipe, RedisKeys(PREFIX))
    lease_key = RedisKeys(PREFIX).exchange_writer_lock("sim")
    term_key = RedisKeys(PREFIX).exchange_writer_term("sim")
    await preset_counter(redis, pro_id, PRESET_USED, windows=4)

    published = Published()
    background.extend(asyncio.create_task(keep_publishing(publisher, s, published)) for s in stack.fresh.values())
    rest = {name: RestLog() for name in ("rest1", "rest2")}
    background.extend(
        asyncio.create_task(poll_rest(stack.addr(name), pro, stack.sim_symbol, log)) for name, log in rest.items()
    )
    raw, sdk = Received(), Received()
    ws = await open_stream(stack.addr("ws2"), internal)
    stream = LiveStream(f"ws://{stack.addr('ws1')}", internal, max_backoff_s=0.5)
    try:
        reply = await support.subscribe(ws, channels)
        assert reply["type"] == "subscribed", reply
        background.append(asyncio.create_task(read_raw(ws, raw)))
        await stream.__aenter__()
        await stream.subscribe(*channels)
        background.append(asyncio.create_task(read_sdk(stream, sdk)))

        start = time.monotonic()
        for client, received in (("raw", raw), ("sdk", sdk)):
            for channel in channels:
                await eventually(
                    f"{client} streams {channel} before the kill",
                    lambda r=received, c=channel: r.first_after(c, start, 0),
                )
        for name, log in rest.items():
            await eventually(f"{name} answers 200 through Redis", lambda log=log: log.shared_ok_since(start))
        await asyncio.sleep(STEADY_S)  # every client in its stride before the kill
        owner_before, term_before = await redis.get(lease_key), await redis.get(term_key)
        assert owner_before == b"failover-a", owner_before
        log_before = len(stack.processes["a"].output())

        replica = replica_of(stack)
        stack.cluster.kill(stack.victim)
        killed = time.monotonic()
        promotion = asyncio.create_task(promoted_after(replica, killed))
        # Each channel's seq counter as the kill left it (the killed master's, as its replica holds it): an event
        # with a higher seq was published after the kill, not merely delivered after it.
        keys = RedisKeys(PREFIX)
        seq_keys = {c: keys.stream_sequence(prices_channel(c.removeprefix("prices:"))) for c in channels}
        reader = replica.client()
        reader.execute_command("READONLY")
        baseline = {c: int((reader.get(k) if c in on_victim else await redis.get(k)) or 0) for c, k in seq_keys.items()}
        print(f"\nkilled master :{victim} (owns the writer lease, {on_victim}, the limited keys' counters)")

        recovery: dict[str, float] = {}
        label = {
            sim: " (killed master, the writer's)",
            fresh[victim]: " (killed master)",
        }
        for client, received in (("raw", raw), ("sdk", sdk)):
            for channel in channels:
                at = await eventually(
                    f"{client}: an event on {channel} after the kill",
                    lambda r=received, c=channel: r.first_after(c, killed, baseline[c]),
                )
                recovery[f"{client} {channel}{label.get(channel, '')}"] = at - killed
        for name, log in rest.items():
            at = await eventually(
                f"{name}: a 200 counted by the shared limiter after the kill",
                lambda log=log: log.shared_ok_since(killed),
            )
            recovery[f"{name} 200 through Redis"] = at - killed
        promoted = await promotion
        print(f"cluster failover: replica :{replica.port} promoted {promoted:.2f} s after the kill")
        for what, seconds in recovery.items():
            print(f"recovery: {what}: {seconds:.2f} s")
        summary = f"promoted after {promoted:.2f} s; " + ", ".join(
            f"{what}: {seconds:.2f} s" for what, seconds in recovery.items()
        )
        late = {what: seconds for what, seconds in recovery.items() if seconds > promoted + AFTER_PROMOTION_S}
        assert not late, f"clients recovered later than {AFTER_PROMOTION_S} s after the promotion: {late} ({summary})"

        # The writer kept its lease or took it again (the key on the promoted replica may have expired meanwhile),
        # and ticks are stored under it after the failover.
        deadline = time.monotonic() + RECOVER_S
        while (owner := await redis.get(lease_key)) != b"failover-a":
            assert time.monotonic() < deadline, (
                f"the writer lease names {owner!r} after the failover; {lease_dump(stack, lease_key)}; "
                f"core a:\n{core_tail(stack)}"
            )
            await asyncio.sleep(0.1)
        leased_wall = time.time()
        while await last_stored_tick(stack.db_url, stack.sim_symbol) < leased_wall + 0.2:
            assert time.monotonic() < deadline, f"no tick stored after the failover; core a:\n{core_tail(stack)}"
            await asyncio.sleep(0.2)
        for core in ("a", "b"):  # nothing left degraded: the writer's task (core a) and every other one
            while set((states := await components(stack.processes[core])).values()) != {md_pb2.COMPONENT_STATE_UP}:
                assert time.monotonic() < deadline, f"core {core} still degraded after the failover: {states}"
                await asyncio.sleep(0.2)
            assert core == "b" or "writer:sim" in states, states
        term_after = await redis.get(term_key)
        stored_after = time.monotonic() - killed
        print(f"recovery: ticks stored and writer up within {stored_after:.2f} s")

        # The limit is shared again: the free key has 10 heavy requests left in Redis; a burst of 20 split over
        # both gateways gets exactly those 10, and the next request is refused.
        if time.time() % 60 > 55:  # one burst, one window
            await asyncio.sleep(60 - time.time() % 60 + 0.2)
        await preset_counter(redis, free_id, FREE_LIMIT - 10 * HEAVY_COST, windows=2)
        heavy = f"/public/v1/candles/sim/{stack.sim_symbol}?limit=1000"
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            burst = await asyncio.gather(
                *(
                    client.get(f"http://{stack.addr(('rest1', 'rest2')[i % 2])}{heavy}", headers={"X-API-Key": free})
                    for i in range(BURST)
                )
            )
            after = await client.get(f"http://{stack.addr('rest1')}{heavy}", headers={"X-API-Key": free})
        statuses = [r.status_code for r in burst]
        assert statuses.count(429) == BURST - 10, f"the limit is not shared after the failover: {statuses}"
        assert after.status_code == 429 and after.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED", after.text
        disconnected = raw.closed  # before the test closes it
    finally:
        await stream.aclose()
        await ws.close()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await publisher_pipe.aclose()
        await redis.aclose()

    for name, log in rest.items():
        statuses = [a.status for a in log.answers]
        local = sum(1 for a in log.answers if a.status == 200 and (a.remaining or 0) > PRO_LIMIT - PRESET_USED)
        print(
            f"{name}: {len(statuses)} answers, {statuses.count(200)} x 200 ({local} from the local limit), "
            f"{statuses.count(503)} x 503, {statuses.count(429)} x 429, "
            f"median {statistics.median(a.took for a in log.answers):.3f} s, "
            f"slowest {max(a.took for a in log.answers):.2f} s"
        )
        print(" ".join(f"{a.at - killed:+.2f}:{a.status}" for a in log.answers))
    for client, received in (("raw", raw), ("sdk", sdk)):
        print(f"{client}: {sum(len(e) for e in received.events.values())} events, gaps told: {received.gaps or 'none'}")

    # Nothing silent, nothing outside the contract.
    assert disconnected is None, f"the raw WebSocket client was disconnected: {disconnected}"
    for name, log in rest.items():
        assert not log.unexpected(), f"{name}: {log.unexpected()[:5]} ({summary})"
    for client, received in (("raw WS", raw), ("LiveStream", sdk)):
        for channel in channels:
            assert not received.unexplained(channel), (
                f"{client} {channel}: silent gaps {received.unexplained(channel)} ({summary})"
            )
        for channel in fresh.values():  # what the publisher was told it published arrived, or a gap was said
            sent = {seq: price for _, price, seq in published.sent.get(channel, [])}
            assert not received.missing(channel, sorted(sent)), (
                f"{client} {channel}: published seqs silently lost {received.missing(channel, sorted(sent))[:10]}"
            )
            later = [seq for at, _, seq in published.sent.get(channel, []) if at > killed + promoted]
            got = {seq for _, seq, _ in received.events[channel]}
            assert got.intersection(later), f"{client} {channel}: nothing published after the promotion arrived"
            # and no seq carries another event than the one published with it
            wrong = [
                (seq, price, sent[seq]) for _, seq, price in received.events[channel] if sent.get(seq, price) != price
            ]
            assert not wrong, f"{client} {channel}: seqs reused after the failover (seq, got, published): {wrong[:5]}"
    output = stack.processes["a"].output()[log_before:]  # what core a logged from the kill on
    lost = output.rfind("writer lease lost; standing by")
    assert lost < 0 or output.find("this instance is the writer", lost) > 0, (
        f"the writer stood by for good:\n{output[-3000:]}"
    )
    for core in ("a", "b"):
        fallbacks = stack.processes[core].output().count("latest-price cache unreadable")
        print(f"core {core}: latest prices read from PostgreSQL instead of the cache {fallbacks} time(s)")
    story = "kept" if lost < 0 else "lost, and taken again"
    print(
        f"writer: lease {story} (term {term_before!r} -> {term_after!r}); publisher failures: {len(published.failed)}"
    )


def replica_of(stack: Stack) -> ClusterNode:
    """The node replicating the victim (``ROLE`` of a replica names its master's port)."""
    for node in stack.cluster.nodes:
        role = node.client().execute_command("ROLE")
        if role[0] in (b"slave", "slave") and int(role[2]) == stack.victim.port:
            return node
    raise AssertionError(f"no replica of :{stack.victim.port}")


async def promoted_after(replica: ClusterNode, killed: float) -> float:
    """Seconds from ``killed`` until ``replica`` says it is a master (the cluster's own failover time)."""

    def wait() -> float:
        client = replica.client(timeout_s=0.5)
        while client.execute_command("ROLE")[0] not in (b"master", "master"):
            assert time.monotonic() - killed < RECOVER_S, f"replica :{replica.port} not promoted"
            time.sleep(0.02)
        return time.monotonic() - killed

    return await asyncio.to_thread(wait)


def lease_dump(stack: Stack, lease_key: str) -> str:
    """The lease key as every live node sees it (a master's value and TTL, a replica's role)."""
    lines = []
    for node in stack.cluster.nodes:
        if node.alive:
            client = node.client()
            role = client.execute_command("ROLE")[0]
            client.execute_command("READONLY")
            lines.append(f":{node.port} {role!r} {client.get(lease_key)!r} pttl={client.pttl(lease_key)}")
    return "; ".join(lines)


def core_tail(stack: Stack) -> str:
    return stack.processes["a"].output()[-3000:]
