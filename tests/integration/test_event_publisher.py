"""The event publisher's script call per (exchange, symbol): every stream of a pair in one call, on real Redis.

A close wave publishes the six timeframes of each symbol (and its candles and signals) in one script call per
pair. Each stream must still get consecutive seqs in its own order, start from the time floor when its counter
is missing, and jump back above the floor after a failed publish (the counter may have lost increments), while
the other streams of the same call carry on; the history holds each event under its seq.
"""

from __future__ import annotations

import secrets
import time

import pytest
import redis.asyncio as aioredis

from common import resp
from core.adapters.events import Event, EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.adapters.stream_history import StreamHistory
from core.domain.channels import Channel, ChannelFamily
from core.domain.errors import StorageUnavailable
from core.domain.indicators import MacdVParams, MacdVValue
from core.domain.signals import Stage, Zone
from core.domain.timeframes import TIMEFRAMES
from core.services.indicators import IndicatorReading
from perseus.marketdata.v1 import stream_service_pb2

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000 - 1_800_000_000_000 % (24 * 3600 * 1000)


def pair_streams(family: ChannelFamily = ChannelFamily.INDICATORS) -> list[Channel]:
    symbol = f"P{secrets.token_hex(3).upper()}-USD"
    return [Channel(family, "sim", symbol, tf) for tf in TIMEFRAMES]


def floor_now() -> int:
    """Where a missing counter starts: now in ms times 1000."""
    return time.time_ns() // 1_000_000 * 1000


async def test_the_streams_of_several_pairs_in_one_call_each_get_consecutive_seqs_in_order(
    bus: resp.Pipeline, redis_prefix: str
) -> None:
    keys = RedisKeys(redis_prefix)
    publisher, history = EventPublisher(bus, keys), StreamHistory(bus, keys)
    first_pair, second_pair = pair_streams(), pair_streams(ChannelFamily.CANDLES)
    channels = first_pair + second_pair[:2]
    floor = floor_now()
    # Interleaved across pairs and streams, 1 to 3 events per stream: each stream keeps its own order.
    events = [Event(c, f"{c.symbol}:{c.timeframe}:{i}".encode()) for i in range(3) for c in channels[: 8 - i * 3]]
    last = await publisher.publish(events)
    assert set(last) == set(channels)
    for channel in channels:
        sent = [e.payload for e in events if e.channel == channel]
        assert last[channel] >= floor + len(sent)  # a new counter starts at the time floor
        replay = await history.after(channel, last[channel] - len(sent))
        assert replay == [(last[channel] - len(sent) + 1 + i, payload) for i, payload in enumerate(sent)]
    again = await publisher.publish([Event(c, b"next") for c in reversed(channels)])
    assert again == {c: last[c] + 1 for c in channels}  # no gap, no repeat, whatever the order in the call
    assert await history.current_seqs(channels) == [again[c] for c in channels]


async def test_after_a_failed_publish_the_streams_jump_above_the_floor_and_the_others_carry_on(
    bus: resp.Pipeline, redis: aioredis.Redis, redis_prefix: str
) -> None:
    keys = RedisKeys(redis_prefix)
    publisher = EventPublisher(bus, keys)
    broken, steady = pair_streams(), pair_streams()
    before = await publisher.publish([Event(c, b"1") for c in broken + steady])
    history_key = keys.stream_history(broken[2])
    await redis.delete(history_key)
    await redis.set(history_key, "not a stream")  # its XADD fails: the whole call is reported failed
    with pytest.raises(StorageUnavailable):
        await publisher.publish([Event(c, b"2") for c in broken])
    await redis.delete(history_key)
    for channel in broken:  # as a promoted replica that lost increments: counters set back
        await redis.set(keys.stream_sequence(channel), 5)
    floor = floor_now()
    after = await publisher.publish([Event(c, b"3") for c in broken + steady])
    for channel in broken:
        assert after[channel] > max(before[channel] + 2, floor)  # above every seq issued and the floor
    for channel in steady:
        assert after[channel] == before[channel] + 1  # published without a failure: no jump


async def test_indicator_readings_of_a_series_met_again_after_others_keep_their_order(
    bus: resp.Pipeline, redis_prefix: str
) -> None:
    """The service hands a wave's readings over series by series; readings of one series split by another's
    (a caller of its own) are published in their order all the same."""
    keys = RedisKeys(redis_prefix)
    publisher, history = EventPublisher(bus, keys), StreamHistory(bus, keys)
    first, second = pair_streams()[:2]
    params = MacdVParams()

    def reading(channel: Channel, i: int) -> IndicatorReading:
        assert channel.timeframe is not None and channel.exchange is not None
        value = MacdVValue(T0 + i * channel.timeframe.ms, 60.0 + i, 50.0, 10.0 + i, 101.0, 100.0, 2.0,
                           Stage.RALLYING, Zone.POSITIVE, True, 0)  # fmt: skip
        return IndicatorReading(channel.exchange, 3, channel.symbol, 0, channel.timeframe, value, params)

    for order in ([(first, 0), (first, 1), (second, 0)], [(first, 2), (second, 1), (first, 3), (second, 2)]):
        await publisher.publish_indicators([reading(c, i) for c, i in order])
    for channel, count in ((first, 4), (second, 3)):
        (seq,) = await history.current_seqs([channel])
        assert seq is not None
        replay = await history.after(channel, seq - count)
        macd_v = [stream_service_pb2.StreamEvent.FromString(p).indicator_update.macd_v for _, p in replay]
        assert macd_v == [60.0 + i for i in range(count)]
