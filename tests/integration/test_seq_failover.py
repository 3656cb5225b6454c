"""Seqs never repeat across a Redis Cluster failover, even when the promoted replica lost the last increments.

Seq counters replicate asynchronously, so a replica promoted after its master died may hold a counter a few
increments behind what subscribers already got; events published with the seqs that follow would be dropped as
duplicates, silently. On a private local cluster: a candle stream (``EventPublisher``) and a price stream
(``PriceCache``) of one pair, both on the master about to die, publish through the core's ``ClusterPipeline``
with a live stream session of the core's stream service subscribed; the master is SIGKILLed, its replica
promoted, and both counters set back a few on the new master (the lost increments). The next events must get
seqs above every one issued before, and the live session must see them, after an explicit ``resume_gap``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url

from common import redis_clients
from common.resp_cluster import ClusterPipeline, Node, SlotMap
from core.adapters.events import Event, EventPublisher
from core.adapters.price_cache import PriceCache
from core.adapters.redis_keys import RedisKeys
from core.adapters.stream_history import StreamHistory
from core.adapters.stream_hub import StreamHub
from core.domain.channels import Channel, ChannelFamily, explicit_name
from core.domain.prices import Tick
from core.domain.timeframes import Timeframe
from core.services.streams import Delivery, Item, ResumeGap, Streams, StreamSession, Subscribed
from perseus_cli.devstack.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.integration

EXCHANGE = "coinbase"
WAIT_S = 30.0  # a failover on the local cluster (2 s node timeout) takes a few seconds
LOST = 2  # increments the promoted replica "missed"


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[LocalRedisCluster]:
    """Its own cluster: a master is killed."""
    with LocalRedisCluster() as cluster:
        yield cluster


async def slot_table(url: str) -> SlotMap:
    slots = SlotMap(parse_url(url), tls=False, client_name="seq-failover-test-slots")
    await slots.refresh()
    return slots


async def flattened(batches: AsyncIterator[list[Item]]) -> AsyncIterator[Item]:
    async for batch in batches:
        for item in batch:
            yield item


async def next_items(items: AsyncIterator[Item], count: int) -> list[Item]:
    async with asyncio.timeout(WAIT_S):
        return [await anext(items) for _ in range(count)]


async def promoted_owner(url: str, key: str, dead: Node) -> Node:
    """The master serving ``key`` once a replica took over from ``dead``."""
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                owner = (await slot_table(url)).owner_of(key)
            except ConnectionError:
                owner = dead
            if owner != dead:
                return owner
            await asyncio.sleep(0.1)


def tick(symbol: str, price: int) -> Tick:
    return Tick(symbol, Decimal(price), Decimal(1), EXCHANGE, int(time.time() * 1000))


async def test_seqs_continue_above_every_earlier_one_after_a_failover_that_lost_increments(
    private_cluster: LocalRedisCluster,
) -> None:
    url = private_cluster.masters()[0].url
    keys = RedisKeys(f"seq-failover:{secrets.token_hex(4)}:")
    slots = await slot_table(url)
    victim = slots.masters()[0]
    symbol = next(  # a pair whose streams (one hash tag) live on the master that dies
        s
        for s in (f"F{secrets.token_hex(3).upper()}-USD" for _ in range(1000))
        if slots.owner_of(f"{{{EXCHANGE}:{s}}}") == victim
    )
    candles = Channel(ChannelFamily.CANDLES, EXCHANGE, symbol, Timeframe.M1)
    prices = Channel(ChannelFamily.PRICES, EXCHANGE, symbol, None)
    candle_seq, price_seq = keys.stream_sequence(candles), keys.stream_sequence(prices)
    assert slots.owner_of(candle_seq) == slots.owner_of(price_seq) == victim
    survivor = next(node.url for node in private_cluster.nodes if node.alive and node.port != victim.port)

    bus = redis_clients.pipeline(url, "cluster", client_name="seq-failover-test-core")
    assert isinstance(bus, ClusterPipeline)
    publisher, cache = EventPublisher(bus, keys), PriceCache(bus, keys)
    hub = StreamHub(survivor, mode="cluster", client_name="seq-failover-test-hub")
    await hub.start()
    session: StreamSession | None = None
    try:
        streams = Streams(hub, StreamHistory(bus, keys), default_exchange=EXCHANGE, exchanges=[EXCHANGE])
        session = streams.open()
        names = [explicit_name(candles), explicit_name(prices)]
        async with asyncio.timeout(WAIT_S):
            answers = [item async for item in session.subscribe(0, names, {})]
        assert isinstance(answers[-1], Subscribed)
        items = flattened(session.batches())

        issued = []
        for n in range(3):
            issued.append((await publisher.publish([Event(candles, b"candle-%d" % n)]))[candles])
            await cache.write([tick(symbol, 100 + n)])
        before = await bus.call(("GET", candle_seq), ("GET", price_seq))
        last_candle, last_price = int(before[0]), int(before[1])
        assert issued == [last_candle - 2, last_candle - 1, last_candle]
        delivered = await next_items(items, 6)
        assert {(d.seq, d.payload) for d in delivered if isinstance(d, Delivery)} >= {
            (seq, b"candle-%d" % n) for n, seq in enumerate(issued)
        }

        private_cluster.kill(next(node for node in private_cluster.nodes if node.port == victim.port))
        promoted = await promoted_owner(survivor, candle_seq, victim)
        new_master = aioredis.Redis(host=promoted.host, port=promoted.port)
        try:  # the publishes the replica did not get before it was promoted: counter and history entries
            for channel, last in ((candles, last_candle), (prices, last_price)):
                await new_master.set(keys.stream_sequence(channel), last - LOST)
                history = keys.stream_history(channel)  # as the replica had it: without the last LOST entries
                kept = await new_master.xrange(history, "-", f"{last - LOST}-0")
                assert len(await new_master.xrange(history)) == len(kept) + LOST
                await new_master.delete(history)
                for entry_id, fields in kept:
                    await new_master.xadd(history, fields, id=entry_id)
        finally:
            await new_master.aclose()

        # The price write is the first call after the failover: the pipeline still routes the pair to the dead
        # master and follows the promotion within the call. The candle publish comes after the table changed.
        await cache.write([tick(symbol, 200)])
        after = await publisher.publish([Event(candles, b"candle-after")])
        price_now = int((await bus.call(("GET", price_seq)))[0])
        assert after[candles] > last_candle, f"seq {after[candles]} was issued before (last {last_candle})"
        assert price_now > last_price, f"price seq {price_now} was issued before (last {last_price})"

        # The live session: the new events arrive, each after a resume_gap from the last seq it had.
        # Each new event arrives live or, when it was published before the hub was back, from the history on
        # RESYNC; in both cases a gap from the last seq the stream had comes first. (Both seqs may be equal: two
        # counters raised in the same millisecond.)
        seen: list[Item] = []
        wanted = {(names[0], last_candle, after[candles]), (names[1], last_price, price_now)}

        def gaps() -> set[tuple[str, int, int]]:
            return {(g.channel, g.requested_seq, g.first_available_seq) for g in seen if isinstance(g, ResumeGap)}

        try:
            async with asyncio.timeout(WAIT_S):
                while not (wanted <= gaps() and sum(isinstance(i, Delivery) for i in seen) >= 2):
                    seen.append(await anext(items))
        except TimeoutError:
            pytest.fail(f"the stream session did not report both jumps as gaps: {seen}")
        candle_after = [i for i in seen if isinstance(i, Delivery) and i.payload == b"candle-after"]
        assert [d.seq for d in candle_after] == [after[candles]]
        history = await StreamHistory(bus, keys).after(candles, last_candle)
        assert [seq for seq, _ in history] == [after[candles]]  # nothing between: the jump is the gap
    finally:
        if session is not None:
            session.close()
        await hub.aclose()
        await bus.aclose()
