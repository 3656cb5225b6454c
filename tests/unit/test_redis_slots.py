"""CROSSSLOT is impossible by construction: every atomic multi-key Redis operation stays in one cluster slot.

Slots are computed as a cluster computes them (CRC16 of the hash tag, ``redis.crc.key_slot``), over the
key lists the code itself builds. The operations that must be atomic on one slot:

* the publish script (sequence, history, channel of one stream), ``core.adapters.events``;
* the latest-price script (latest hash + the price stream's three keys), ``core.adapters.price_cache``;
* the writer lease's acquire script (lock + term counter), ``core.adapters.writer_lock``;
* ``MGET`` of every exchange heartbeat, ``core.adapters.exchange_directory``;
* ``MGET``/``MSET`` of indicator states grouped per pair, ``core.adapters.indicator_store``.

Everything else is one key per command or script (candle window scripts, the rate limiter's window
script, the WS connection scripts, the candle probe, stream history reads), or a *non-atomic* pipeline,
which a cluster client splits per node. :func:`test_every_key_family_is_walked` fails when a key family is
added to :class:`RedisKeys` without being placed here.
"""

from __future__ import annotations

import inspect
import itertools
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from common.resp import AutoPipeline
from core.adapters.indicator_store import IndicatorStore
from core.adapters.redis_keys import RedisKeys, hash_tag
from core.codec.events import price_channel
from core.domain.channels import ALL_SYMBOLS, Channel, ChannelFamily, all_prices_channel
from core.domain.prices import Tick
from core.domain.symbols import canonical_symbol
from core.domain.timeframes import Timeframe
from gateways.rest.candle_cache import window_key
from gateways.rest.limiter import RateLimiter
from gateways.ws.connections import ConnectionCounter

PREFIXES = ("perseus:", "a-b.c:", "")
EXCHANGES = ("sim", "coinbase", "binance", "kraken", "pw-host.1")
SYMBOLS = ("BTC-USD", "ETH-USDT", "1INCH-USDT", "btc/usd")


def slot(key: str) -> int:
    return key_slot(key.encode())


def one_slot(keys: list[str]) -> bool:
    return len({slot(k) for k in keys}) == 1


def channels(exchange: str, symbol: str) -> list[Channel]:
    found = [Channel(ChannelFamily.PRICES, exchange, symbol, None)]
    for family, tf in itertools.product((ChannelFamily.CANDLES, ChannelFamily.SIGNALS), Timeframe):
        found.append(Channel(family, exchange, symbol, tf))
    return found


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("exchange", "symbol"), list(itertools.product(EXCHANGES, SYMBOLS)))
def test_publish_script_keys_share_a_slot(prefix: str, exchange: str, symbol: str) -> None:
    keys = RedisKeys(prefix)
    for channel in channels(exchange, symbol):
        assert one_slot(keys.stream_keys(channel)), channel


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("symbol", [*SYMBOLS, ALL_SYMBOLS])
def test_listened_script_keys_are_the_on_demand_streams_and_share_its_slot(prefix: str, symbol: str) -> None:
    keys = RedisKeys(prefix)
    channel = all_prices_channel(symbol if symbol == ALL_SYMBOLS else canonical_symbol(symbol))
    marker, seq = keys.listened_keys(keys.stream_channel(channel)) or ("", "")
    assert marker == keys.stream_listened(channel) and seq == keys.stream_sequence(channel)
    assert one_slot([marker, *keys.stream_keys(channel)])
    assert keys.listened_keys(keys.stream_channel(Channel(ChannelFamily.PRICES, "coinbase", "BTC-USD", None))) is None


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("source", "symbol"), list(itertools.product(EXCHANGES, SYMBOLS)))
def test_latest_price_script_keys_share_a_slot(prefix: str, source: str, symbol: str) -> None:
    keys = RedisKeys(prefix)
    tick = Tick(symbol=symbol.upper().replace("/", "-"), price=Decimal(1), volume=Decimal(1), source=source, ts_ms=1)
    script_keys = [keys.latest_price(tick.source, tick.symbol), *keys.stream_keys(price_channel(tick))]
    assert len(script_keys) == 4
    assert one_slot(script_keys)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_writer_lease_and_every_heartbeat_share_one_slot(prefix: str) -> None:
    keys = RedisKeys(prefix)
    for exchange in EXCHANGES:
        assert one_slot([keys.exchange_writer_lock(exchange), keys.exchange_writer_term(exchange)])
    heartbeats = [keys.exchange_heartbeat(e) for e in EXCHANGES]  # one MGET for all
    control = [*heartbeats, *(keys.exchange_writer_lock(e) for e in EXCHANGES)]
    assert one_slot(control)


UNUSED_PIPELINE = AutoPipeline({"host": "127.0.0.1", "port": 1}, tls=False, client_name="unused")  # never connects


async def test_indicator_state_mget_and_mset_groups_are_each_one_slot() -> None:
    store = IndicatorStore(UNUSED_PIPELINE, RedisKeys())  # never connects: only its grouping is used
    series = [(e, s, tf) for e, s, tf in itertools.product(EXCHANGES, ("BTC-USD", "ETH-USDT"), Timeframe)]
    groups = store._by_pair(series)
    assert len(groups) == len(EXCHANGES) * 2
    for _positions, names in groups:
        assert len(names) == len(Timeframe)
        assert one_slot(names), names
    assert len({slot(names[0]) for _, names in groups}) > 1  # different pairs may live on different shards


@pytest.mark.parametrize(("exchange", "symbol"), list(itertools.product(EXCHANGES, ("BTC-USD", "ETH-USDT"))))
def test_the_gateway_probes_the_window_the_core_writes(exchange: str, symbol: str) -> None:
    keys = RedisKeys("perseus:")
    for tf in Timeframe:
        probed = window_key("perseus:", exchange, symbol, tf.value)
        assert probed == keys.candle_window(exchange, symbol, tf)


def test_gateway_single_key_scripts_have_a_tagged_key_per_api_key() -> None:
    """The rate limiter's window script and the WS connection scripts take one key; its tag is the key id,
    so one API key's counters stay on one shard however many gateways count it."""
    limiter = RateLimiter(UNUSED_PIPELINE, "perseus:", fallbacks=None)  # type: ignore[arg-type]
    assert hash_tag(limiter.counter_key(42, 1)) == hash_tag(limiter.counter_key(42, 2)) == "apikey:42"
    counter = ConnectionCounter(aioredis.Redis(), prefix="perseus:")
    assert hash_tag(counter.key_of(42)) == "42"


def test_every_key_family_is_walked() -> None:
    """A new key or channel builder must be placed in this module (atomic with which keys?) before it ships."""
    walked = {
        "latest_price", "price_sources", "candle_window", "indicator_state", "stream_channel", "stream_sequence",
        "stream_history", "stream_keys", "candle_close_channel", "signal_channel", "price_channel",
        "exchange_heartbeat", "exchange_writer_lock", "exchange_writer_term", "rate_limit", "ws_connections",
        "key_auth_cache", "pair_tag", "stream_listened", "listened_keys",
    }  # fmt: skip
    builders = {
        name
        for name, member in inspect.getmembers(RedisKeys)
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, staticmethod))
    }
    assert builders == walked
