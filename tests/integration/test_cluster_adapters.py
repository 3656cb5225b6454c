"""The core's and the gateways' Redis adapters, unchanged, on a real local Redis Cluster.

Each test drives the real adapter (built as ``core/app.py`` and the gateways build it in cluster mode) with
keys spread over all three masters, and checks what a user would see: consecutive seqs and the history a
resume reads, latest prices, candle windows, indicator states, the writer lease, rate-limit decisions that
two gateway instances share, and connection slots counted across instances. On the session's
``redis_cluster`` (not ``redis_url``, which is the standalone server unless ``PERSEUS_TEST_REDIS=cluster``),
so this module checks the cluster paths in every run.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio.cluster import ClusterNode, RedisCluster

from common import redis_clients
from common.resp_cluster import ClusterPipeline, Node
from core.adapters.candle_store import CandleRowsReader, CandleStore
from core.adapters.events import Event, EventPublisher
from core.adapters.indicator_store import IndicatorStore
from core.adapters.price_cache import PriceCache
from core.adapters.redis_client import RedisClient, redis_client
from core.adapters.redis_keys import RedisKeys
from core.adapters.stream_history import StreamHistory
from core.adapters.writer_lock import WriterLock
from core.app import open_redis
from core.codec.events import price_channel
from core.domain.candles import Candle
from core.domain.channels import Channel, ChannelFamily
from core.domain.indicators import Bar, MacdVState, step
from core.domain.prices import Tick
from core.domain.timeframes import Timeframe
from core.services.candle_queries import CandleQuery, Span
from core.settings import StartupError
from gateways.common.runner import redis_unreachable
from gateways.common.services import GatewayServices
from gateways.common.settings import GatewaySettings
from gateways.rest.limiter import RateLimiter, fallback_counter
from gateways.ws.connections import ConnectionCounter
from gateways.ws.session import REDIS_CONNECTIONS, REDIS_WAIT_S
from perseus_cli.devstack.processes import free_port
from perseus_cli.devstack.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.integration

SYMBOLS = [f"C{i}-USD" for i in range(24)]  # 24 pairs: their hash tags land on every master


@pytest.fixture
def url(redis_cluster: LocalRedisCluster) -> str:
    """A live master's URL: another module's failover test may have killed the first node."""
    return redis_cluster.masters()[0].url


@pytest.fixture
def keys() -> RedisKeys:
    return RedisKeys(f"perseus-cluster-adapters:{secrets.token_hex(4)}:")


@pytest.fixture
async def bus(url: str) -> AsyncIterator[ClusterPipeline]:
    """The core's shared pipeline, as ``core.app.open_redis`` builds it on a cluster."""
    mode = await redis_clients.open_mode(url)
    assert mode == "cluster"
    pipeline = redis_clients.pipeline(url, mode, client_name="perseus-test-cluster-adapters")
    assert isinstance(pipeline, ClusterPipeline)
    yield pipeline
    await pipeline.aclose()


@pytest.fixture
async def client(url: str) -> AsyncIterator[RedisClient]:
    """The core's redis-py client on a cluster (``RedisCluster``, hiredis packing)."""
    redis = redis_client(url, "cluster")
    assert isinstance(redis, RedisCluster)
    assert await redis.ping()  # as open_redis does: the slot table is read before the first bounded read
    yield redis
    await redis.aclose()


async def owners(bus: ClusterPipeline, names: Iterable[str]) -> set[Node]:
    """The masters owning ``names``; every master, the tests assert, so no adapter works by luck of one slot."""
    await bus.call(("PING",))  # the slot table is read on the first call
    return {bus.slots.owner_of(name) for name in names}


def prices(symbol: str) -> Channel:
    return Channel(ChannelFamily.PRICES, "coinbase", symbol, None)


async def test_the_core_opens_a_cluster_client_and_pipeline_and_says_when_redis_is_down(url: str) -> None:
    mode, client, pipeline = await open_redis(url, client_name="perseus-test-open")
    try:
        assert mode == "cluster"
        assert isinstance(client, RedisCluster) and isinstance(pipeline, ClusterPipeline)
        assert await client.ping()
    finally:
        await pipeline.aclose()
        await client.aclose()
    with pytest.raises(StartupError, match="PERSEUS_REDIS_URL: cannot reach Redis"):
        await open_redis(f"redis://127.0.0.1:{free_port()}/0", client_name="perseus-test-open")


async def test_a_gateway_builds_its_cluster_client_from_what_redis_says(url: str) -> None:
    assert redis_unreachable(url) == ""  # the runner's pre-flight: any node answers PING
    services = await GatewayServices.open(GatewaySettings.from_env({"PERSEUS_REDIS_URL": url}, process="rest"))
    try:
        assert services.redis_mode == "cluster" and isinstance(services.redis, RedisCluster)
        assert await services.redis.ping()  # what /health asks
    finally:
        await services.aclose()


async def test_published_seqs_are_consecutive_per_stream_and_a_resume_reads_them_back(
    bus: ClusterPipeline, keys: RedisKeys
) -> None:
    channels = [prices(s) for s in SYMBOLS]
    assert await owners(bus, [keys.stream_sequence(c) for c in channels]) == set(bus.slots.masters())
    publisher = EventPublisher(bus, keys)
    history = StreamHistory(bus, keys)
    assert await history.current_seqs(channels) == [None] * len(channels)
    lasts: list[dict[Channel, int]] = []
    for round_ in range(3):  # every call carries all 24 streams: one script call each, on three masters
        events = [Event(c, f"{c.symbol}:{round_}:{i}".encode()) for c in channels for i in range(round_ + 1)]
        lasts.append(await publisher.publish(events))
    for channel in channels:
        first, second, third = (last[channel] for last in lasts)
        assert (second - first, third - second) == (2, 3)  # 2 then 3 more events: no gap, no repeat
    assert await history.current_seqs(channels) == [lasts[-1][c] for c in channels]
    channel = channels[5]
    replay = await history.after(channel, lasts[0][channel])  # a resume after the first round's last event
    assert replay == [
        (lasts[0][channel] + 1, f"{channel.symbol}:1:0".encode()),
        (lasts[0][channel] + 2, f"{channel.symbol}:1:1".encode()),
        *((lasts[1][channel] + 1 + i, f"{channel.symbol}:2:{i}".encode()) for i in range(3)),
    ]


async def test_a_publish_after_every_master_lost_its_scripts_still_lands(
    bus: ClusterPipeline, client: RedisCluster, keys: RedisKeys
) -> None:
    channels = [prices(s) for s in SYMBOLS]
    publisher = EventPublisher(bus, keys)
    before = await publisher.publish([Event(c, b"before") for c in channels])
    for master in client.get_primaries():  # as after a restart or a failover
        await client.execute_command("SCRIPT", "FLUSH", target_nodes=master)
    after = await publisher.publish([Event(c, b"after") for c in channels])
    assert all(after[c] == before[c] + 1 for c in channels)


async def test_latest_prices_are_the_newest_tick_per_source_and_each_tick_is_an_event(
    bus: ClusterPipeline, keys: RedisKeys
) -> None:
    sources = ("coinbase", "binance", "kraken")
    assert await owners(bus, [keys.latest_price(src, s) for s in SYMBOLS for src in sources]) == set(
        bus.slots.masters()
    )
    cache = PriceCache(bus, keys)
    now = int(time.time() * 1000)
    ticks = [
        Tick(symbol, Decimal(f"{100 + n}.5"), Decimal("2"), source, now - 1000 + n)
        for n, (symbol, source) in enumerate((s, src) for s in SYMBOLS for src in sources)
    ]
    await cache.write(ticks)
    late = Tick(SYMBOLS[0], Decimal("1"), Decimal("1"), "coinbase", now - 60_000)  # older than what is there
    await cache.write([late])
    for i, symbol in enumerate(SYMBOLS):
        latest = await cache.latest(symbol)
        expected = [(src, Decimal(f"{100 + 3 * i + j}.5"), now - 1000 + 3 * i + j) for j, src in enumerate(sources)]
        assert [(p.source, p.price, p.ts_ms) for p in latest] == expected[::-1]  # newest first
    history = StreamHistory(bus, keys)
    seqs = await history.current_seqs([price_channel(t) for t in ticks])
    assert all(seq is not None for seq in seqs)
    events = await history.after(price_channel(late), 0)
    assert len(events) == 2  # the first tick and the late one: both published, only the first is the latest


async def test_candle_windows_keep_the_newest_candles_and_are_read_back_by_the_core(
    bus: ClusterPipeline, client: RedisCluster, keys: RedisKeys
) -> None:
    window_keys = [keys.candle_window("sim", s, Timeframe.M1) for s in SYMBOLS]
    assert await owners(bus, window_keys) == set(bus.slots.masters())
    store = CandleStore(None, bus, keys, window_size=5)  # type: ignore[arg-type]  # windows only
    start = 1_800_000_000_000

    def candle(symbol: str, minute: int) -> Candle:
        price = Decimal(100 + minute)
        return Candle("sim", symbol, Timeframe.M1, start + minute * 60_000, price, price, price, price, Decimal(1))

    await store.add_to_windows(1, [candle(s, m) for s in SYMBOLS for m in range(4)])
    await store.add_to_windows(1, [candle(s, m) for s in SYMBOLS for m in range(4, 8)])  # 8 > 5: the oldest go
    reader = CandleRowsReader(None, client, keys, {"sim": 1})  # type: ignore[arg-type]  # windows only
    for symbol in SYMBOLS:
        query = CandleQuery("sim", symbol, Timeframe.M1, 3, None, None)
        assert await reader.window_oldest(query) == start + 3 * 60_000
        rows = await reader.window(query, Span(None, None, 3, newest=True))
        assert [t for t, _ in rows] == [start + m * 60_000 for m in (5, 6, 7)]
        oldest, members = await reader.newest_in_window(query, Span(None, None, 2, newest=True))
        assert oldest == start + 3 * 60_000 and len(members) == 2


async def test_indicator_states_of_a_wave_are_written_and_read_back_on_every_master(
    bus: ClusterPipeline, keys: RedisKeys
) -> None:
    series = [("sim", s, tf) for s in SYMBOLS for tf in (Timeframe.M1, Timeframe.H1)]
    assert await owners(bus, [keys.indicator_state(*k) for k in series]) == set(bus.slots.masters())
    states: list[MacdVState] = []
    for i, _ in enumerate(series):
        state = None
        for m in range(40):
            state, _ = step(state, Bar(m * 60_000, 100.0 + i + m, 99.0 + i, 99.5 + i + m % 3))
        assert state is not None
        states.append(state)
    writer = IndicatorStore(bus, keys)
    await writer.save(list(zip(series, states, strict=True)))
    reader = IndicatorStore(bus, keys)  # a fresh one: nothing cached, everything decoded from Redis
    assert await reader.load(series) == states
    assert await reader.load([("sim", "NONE-USD", Timeframe.M1)]) == [None]
    assert await reader.latest(series[7]) == states[7].last


async def test_one_writer_lease_per_exchange_and_its_terms(client: RedisCluster, keys: RedisKeys) -> None:
    exchanges = ["sim", "coinbase", "binance", "kraken"]
    for exchange in exchanges:
        lock_key, term_key = keys.exchange_writer_lock(exchange), keys.exchange_writer_term(exchange)
        mine = WriterLock(client, lock_key, term_key, "core-a")
        rival = WriterLock(client, lock_key, term_key, "core-b")
        assert await mine.acquire() and mine.term == 1
        assert not await rival.acquire()
        assert (await rival.leader()).owner == "core-a"
        assert await mine.renew()
        await rival.raise_term_floor(10)
        await mine.release()
        assert await rival.acquire() and rival.term == 11
        leader = await mine.leader()
        assert (leader.owner, leader.term) == ("core-b", 11)
        assert not await mine.renew()
        await rival.release()


async def test_two_gateways_share_each_keys_rate_limit_and_the_probe_comes_back_with_it(
    url: str, bus: ClusterPipeline, keys: RedisKeys
) -> None:
    prefix = keys.prefix
    pipelines = [redis_clients.pipeline(url, "cluster", client_name=f"perseus-test-rest-{i}") for i in range(2)]
    registry = CollectorRegistry()
    fallbacks = fallback_counter(registry)
    limiters = [RateLimiter(p, prefix, fallbacks) for p in pipelines]
    window_key = f"{prefix}candles:{{sim:PROBE-USD}}:1m"
    await bus.call(("ZADD", window_key, 1, b"newest"))
    try:
        key_ids = list(range(1, 13))
        window = int(time.time()) // 60
        counters = [limiters[0].counter_key(k, window) for k in key_ids]
        assert await owners(bus, counters) == set(bus.slots.masters())
        probe = ("ZRANGE", window_key, -1, -1, "WITHSCORES")
        decisions: dict[int, list[bool]] = {k: [] for k in key_ids}
        for n in range(7):  # alternate instances: the count is shared, not per instance
            spent = await asyncio.gather(*(limiters[n % 2].spend(k, 5, 1, also=probe) for k in key_ids))
            for k, (decision, read) in zip(key_ids, spent, strict=True):
                decisions[k].append(decision.allowed)
                assert read == [b"newest", b"1"]  # the probe's reply, from its own master
        assert all(d == [True] * 5 + [False] * 2 for d in decisions.values())
        assert registry.get_sample_value("perseus_rest_ratelimit_local_fallbacks_total") == 0
    finally:
        for p in pipelines:
            await p.aclose()


async def test_connection_slots_are_counted_across_gateway_instances(url: str, keys: RedisKeys) -> None:
    prefix = keys.prefix
    clients = [  # as gateways/ws/session.py builds the counter's client on a cluster
        redis_clients.redis_py(
            url,
            "cluster",
            socket_timeout=REDIS_WAIT_S,
            socket_connect_timeout=REDIS_WAIT_S,
            max_connections=REDIS_CONNECTIONS,
            blocking=True,
        )
        for _ in range(2)
    ]
    counters = [ConnectionCounter(c, prefix=prefix) for c in clients]
    try:
        key_ids = list(range(1, 13))
        nodes = await _cluster_nodes(clients[0], [counters[0].key_of(k) for k in key_ids])
        assert len({node.port for node in nodes}) == 3
        first = [await counters[i].acquire(key_ids[i], 3) for i in range(2)]  # each instance's first client
        held = first + await asyncio.gather(
            *(counters[i % 2].acquire(k, 3) for k in key_ids for i in range(3) if (k, i) not in ((1, 0), (2, 1)))
        )
        assert all(held)  # three per key, from two instances
        assert await asyncio.gather(*(counters[1].acquire(k, 3) for k in key_ids)) == [None] * len(key_ids)
        assert first[0] is not None
        await counters[0].release(key_ids[0], first[0])  # frees one slot of the first key, for either instance
        assert await counters[1].acquire(key_ids[0], 3) is not None
        await asyncio.gather(*(c.refresh() for c in counters))
        many = await asyncio.gather(*(counters[0].acquire(100 + i, 1_000) for i in range(200)))
        assert all(many)  # 200 at once through 32 connections per node: they wait their turn, none fails
    finally:
        for c in clients:
            await c.aclose()


async def _cluster_nodes(client: RedisClient, names: list[str]) -> list[ClusterNode]:
    """The masters redis-py's cluster client sends ``names`` to."""
    assert isinstance(client, RedisCluster)
    await client.initialize()
    return [client.get_node_from_key(name) for name in names]
