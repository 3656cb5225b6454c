"""The local Redis Cluster fixture, cluster detection, and Perseus's real scripts and multi-key commands on it.

Each script runs on the node that owns its first key, sent straight to that node: a cluster node answers
``CROSSSLOT`` when the keys span slots and ``MOVED`` when it does not own them, so a reply proves the
keys the code builds are cluster-safe. The failover test kills a master and runs last (the fixture is
shared by the session; it leaves a cluster with every slot covered, one master short of a replica).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from redis.asyncio import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from common import resp
from common.redis_mode import detect
from core.adapters.candle_store import _NEWEST_IN_WINDOW, _WINDOW_ADD
from core.adapters.events import _PUBLISH_STREAMS
from core.adapters.price_cache import _WRITE
from core.adapters.redis_keys import RedisKeys
from core.adapters.writer_lock import _ACQUIRE, _RAISE_FLOOR, _RELEASE, _RENEW, WriterLock
from core.codec.events import price_channel
from core.domain.channels import Channel, ChannelFamily
from core.domain.prices import Tick
from core.domain.timeframes import Timeframe
from gateways.rest.candle_cache import window_key
from gateways.rest.limiter import RateLimiter
from gateways.rest.ratelimit import WINDOW_SCRIPT
from gateways.ws import connections
from perseus_cli.devstack.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.integration

KEYS = RedisKeys("perseus-cluster-test:")
PAIRS = list(itertools.product(("sim", "coinbase", "binance"), ("BTC-USD", "ETH-USD", "SOL-USD", "1INCH-USDT")))
STANDALONE_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def client(redis_cluster: LocalRedisCluster) -> Iterator[RedisCluster]:
    rc = RedisCluster.from_url(redis_cluster.url)
    yield rc
    rc.close()


def on_owner(rc: RedisCluster, keys: list[str], *command: object) -> object:
    """``command`` sent to the node owning ``keys[0]``, unrouted: a slot mix-up is the server's error."""
    node = rc.get_node_from_key(keys[0])
    return node.redis_connection.execute_command(*command)


def run_script(rc: RedisCluster, script: str, keys: list[str], args: list[object]) -> object:
    return on_owner(rc, keys, "EVAL", script, len(keys), *keys, *args)


def test_the_fixture_spreads_keys_over_three_masters_and_reads_them_back(
    redis_cluster: LocalRedisCluster, client: RedisCluster
) -> None:
    assert len(redis_cluster.masters()) == 3
    assert len(redis_cluster.nodes) == 6
    keys = [f"fixture:{i}" for i in range(300)]
    for key in keys:
        client.set(key, key.upper())
    owners = {client.get_node_from_key(key).name for key in keys}
    assert len(owners) == 3
    assert [client.get(key) for key in keys] == [key.upper().encode() for key in keys]


async def test_detect_tells_a_cluster_from_a_standalone_server(redis_cluster: LocalRedisCluster) -> None:
    for url in redis_cluster.urls:
        assert await detect(url) == "cluster"
    assert await detect(redis_cluster.url + "/3") == "cluster"  # a cluster refuses SELECT 3: asked on db 0
    assert await detect(STANDALONE_URL) == "standalone"
    assert await detect("redis://127.0.0.1:6379/5") == "standalone"


def test_the_publish_and_latest_price_scripts_run_on_each_pairs_shard(client: RedisCluster) -> None:
    shards = set()
    for venue, symbol in PAIRS:
        channel = Channel(ChannelFamily.CANDLES, venue, symbol, Timeframe.H1)
        keys = KEYS.stream_keys(channel)
        (first,) = run_script(client, _PUBLISH_STREAMS, keys, [100, 0, 2, b"a", b"b"])  # maxlen, jump, count
        assert client.xlen(keys[1]) >= 2
        tick = Tick(symbol=symbol, price=Decimal("1.5"), volume=Decimal(2), source=venue, ts_ms=1_000)
        price_keys = [KEYS.latest_price(venue, symbol), *KEYS.stream_keys(price_channel(tick))]
        run_script(client, _WRITE, price_keys, [tick.ts_ms, 60_000, "1.5", "2", 100, 0, b"p"])
        assert client.hget(price_keys[0], "price") == b"1.5"
        assert first > 0
        shards.add(client.get_node_from_key(keys[0]).name)
    assert len(shards) > 1  # the pairs really are spread over the shards


def test_candle_window_scripts_and_the_gateway_probe(client: RedisCluster) -> None:
    for venue, symbol in PAIRS:
        key = KEYS.candle_window(venue, symbol, Timeframe.M1)
        run_script(client, _RESET, [key], [])
        run_script(client, _WINDOW_ADD, [key], [10, 60_000, b"c1", 120_000, b"c2"])
        oldest, newest = run_script(client, _NEWEST_IN_WINDOW, [key], ["+inf", "-inf", 5])  # type: ignore[misc]
        assert oldest == b"60000" and newest == [b"c2", b"c1"]
        probe = window_key(KEYS.prefix, venue, symbol, "1m")
        assert on_owner(client, [probe], "ZRANGE", probe, -1, -1, "WITHSCORES") == [[b"c2", 120000.0]]


_RESET = "return redis.call('DEL', KEYS[1])"


def test_the_writer_lease_scripts_and_the_heartbeat_mget(client: RedisCluster) -> None:
    for exchange in ("sim", "coinbase", "binance", "kraken"):
        lock, term = KEYS.exchange_writer_lock(exchange), KEYS.exchange_writer_term(exchange)
        run_script(client, _RAISE_FLOOR, [term], [7])
        assert run_script(client, _ACQUIRE, [lock, term], ["me", 5_000]) == 8
        assert run_script(client, _ACQUIRE, [lock, term], ["other", 5_000]) == 0
        assert run_script(client, _RENEW, [lock], ["me", 5_000]) == 1
        assert run_script(client, _RELEASE, [lock], ["me"]) == 1
        client.set(KEYS.exchange_heartbeat(exchange), exchange)
    beats = [KEYS.exchange_heartbeat(e) for e in ("sim", "coinbase", "binance", "kraken")]
    assert on_owner(client, beats, "MGET", *beats) == [b"sim", b"coinbase", b"binance", b"kraken"]


def test_indicator_states_of_a_pair_in_one_mset_and_one_mget(client: RedisCluster) -> None:
    for venue, symbol in PAIRS:
        names = [KEYS.indicator_state(venue, symbol, tf) for tf in Timeframe]
        command: list[object] = ["MSET"]
        for name in names:
            command += [name, name]
        on_owner(client, names, *command)
        assert on_owner(client, names, "MGET", *names) == [n.encode() for n in names]


def test_the_rate_limit_and_ws_connection_scripts(client: RedisCluster) -> None:
    unused = resp.AutoPipeline({"host": "127.0.0.1", "port": 1}, tls=False, client_name="unused")  # never connects
    limiter = RateLimiter(unused, KEYS.prefix, None)  # type: ignore[arg-type]  # only its key names are used
    counter = connections.ConnectionCounter(aioredis.Redis(), prefix=KEYS.prefix)  # only its key names are used
    for key_id in range(1, 8):
        window = limiter.counter_key(key_id, 1)
        assert run_script(client, WINDOW_SCRIPT, [window], [3, 5, 65_000]) == [1, 3]
        assert run_script(client, WINDOW_SCRIPT, [window], [3, 5, 65_000]) == [0, 3]
        slots = counter.key_of(key_id)
        assert run_script(client, connections._ACQUIRE, [slots], ["c1", 1, 30_000, 0]) == 1
        assert run_script(client, connections._ACQUIRE, [slots], ["c2", 1, 30_000, 1]) == 0
        assert run_script(client, connections._REFRESH, [slots], [30_000, 1, "c1", "c2"]) == 1


async def test_the_writer_lease_and_ws_connection_slots_work_through_a_cluster_client(
    redis_cluster: LocalRedisCluster,
) -> None:
    """The real :class:`WriterLock` and :class:`ConnectionCounter` on redis-py's cluster client: their scripts
    are called one by one (not pipelined), so they are routed by slot and need nothing more."""
    rc = AsyncRedisCluster.from_url(redis_cluster.url)
    try:
        lock = WriterLock(rc, KEYS.exchange_writer_lock("kraken"), KEYS.exchange_writer_term("kraken"), "core-a")  # type: ignore[arg-type]
        rival = WriterLock(rc, KEYS.exchange_writer_lock("kraken"), KEYS.exchange_writer_term("kraken"), "core-b")  # type: ignore[arg-type]
        assert await lock.acquire()
        assert not await rival.acquire()
        assert await lock.renew()
        assert (await rival.leader()).owner == "core-a"
        await lock.release()
        assert await rival.acquire() and rival.term == lock.term + 1
        counter = connections.ConnectionCounter(rc, prefix=KEYS.prefix)  # type: ignore[arg-type]
        held = [await counter.acquire(key_id, 2) for key_id in (11, 11, 11, 12)]
        assert held[0] and held[1] and held[2] is None and held[3]
        await counter.refresh()
        await counter.release(11, held[0])
        assert await counter.acquire(11, 2) is not None
    finally:
        await rc.aclose()


def test_killing_a_master_promotes_its_replica(redis_cluster: LocalRedisCluster, client: RedisCluster) -> None:
    key = "failover:probe"
    client.set(key, "kept")
    victim = next(n for n in redis_cluster.nodes if n.port == client.get_node_from_key(key).port)
    assert on_owner(client, [key], "WAIT", 1, 5_000) == 1  # the replica has the write before the crash
    redis_cluster.kill(victim)
    survivors = [n for n in redis_cluster.nodes if n.alive]
    deadline = time.monotonic() + 30  # a bound far above the 2 s node timeout: not a performance figure
    while time.monotonic() < deadline:
        infos = [redis_cluster.cluster_info(n) for n in survivors]
        promoted = len(redis_cluster.masters()) == 3  # the victim is dead: one of them is a former replica
        if promoted and all(i["cluster_state"] == "ok" and i["cluster_slots_ok"] == "16384" for i in infos):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no replica took over from the master on port {victim.port}")
    fresh = RedisCluster.from_url(survivors[0].url)
    try:
        assert fresh.get(key) == b"kept"
        assert fresh.get_node_from_key(key).port != victim.port
    finally:
        fresh.close()
