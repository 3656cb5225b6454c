"""Redis key and channel names: prefixed, distinct, and Redis-Cluster-ready (shared hash tags)."""

from __future__ import annotations

import itertools

import pytest

from core.adapters.redis_keys import DEFAULT_PREFIX, RedisKeys, hash_tag
from core.domain.channels import Channel, ChannelFamily, parse_channel
from core.domain.timeframes import Timeframe

PREFIX = "test-prefix:"
KEYS = RedisKeys(PREFIX)
EXCHANGES = ("sim", "coinbase", "binance", "kraken")
SYMBOLS = ("BTC-USD", "ETH-USD", "1INCH-USDT")


def pair_keys(keys: RedisKeys, exchange: str, symbol: str, *, aliases: bool = True) -> list[str]:
    """Every key and channel a script may touch together for one (exchange, symbol).

    ``aliases`` adds the convenience channel builders, which name the same
    channels as ``stream_channel``.
    """
    names = [keys.latest_price(exchange, symbol)]
    for tf in Timeframe:
        names += [keys.candle_window(exchange, symbol, tf), keys.indicator_state(exchange, symbol, tf)]
        if aliases:
            names += [keys.candle_close_channel(exchange, symbol, tf), keys.signal_channel(exchange, symbol, tf)]
    if aliases:
        names.append(keys.price_channel(exchange, symbol))
    for family in ChannelFamily:
        for tf in list(Timeframe) if family.has_timeframe else [None]:
            channel = Channel(family, exchange, symbol, tf)
            names += [keys.stream_channel(channel), keys.stream_sequence(channel), keys.stream_history(channel)]
    return names


def all_names(keys: RedisKeys) -> list[str]:
    names: list[str] = []
    for exchange, symbol in itertools.product(EXCHANGES, SYMBOLS):
        names += pair_keys(keys, exchange, symbol, aliases=False)
    for symbol in SYMBOLS:
        names.append(keys.price_sources(symbol))
    for exchange in EXCHANGES:
        names += [keys.exchange_heartbeat(exchange), keys.exchange_writer_lock(exchange)]
    for key_id in (1, 2, 42):
        names += [keys.rate_limit(key_id), keys.ws_connections(key_id)]
    names.append(keys.key_auth_cache("ab" * 32))
    return names


@pytest.mark.parametrize(("exchange", "symbol"), list(itertools.product(EXCHANGES, SYMBOLS)))
def test_all_keys_of_one_pair_share_one_hash_tag(exchange: str, symbol: str) -> None:
    names = pair_keys(KEYS, exchange, symbol)
    assert {hash_tag(name) for name in names} == {f"{exchange}:{symbol}"}
    assert KEYS.pair_tag(exchange, symbol) == f"{{{exchange}:{symbol}}}"


def test_different_pairs_have_different_tags_so_they_can_live_on_different_shards() -> None:
    tags = {hash_tag(KEYS.candle_window(e, s, "1m")) for e, s in itertools.product(EXCHANGES, SYMBOLS)}
    assert len(tags) == len(EXCHANGES) * len(SYMBOLS)


def test_every_name_is_distinct_and_prefixed() -> None:
    names = all_names(KEYS)
    assert len(names) == len(set(names))
    assert all(name.startswith(PREFIX) for name in names)
    assert all(" " not in name and "*" not in name for name in names)


def test_each_name_has_exactly_one_non_empty_hash_tag_except_the_single_key_auth_cache() -> None:
    for name in all_names(KEYS):
        if name == KEYS.key_auth_cache("ab" * 32):
            assert hash_tag(name) is None
            continue
        assert name.count("{") == 1 and name.count("}") == 1, name
        assert hash_tag(name), name


def test_exchange_heartbeats_share_one_tag_so_they_can_be_read_with_one_mget() -> None:
    tags = {hash_tag(KEYS.exchange_heartbeat(e)) for e in EXCHANGES}
    tags |= {hash_tag(KEYS.exchange_writer_lock(e)) for e in EXCHANGES}
    assert tags == {"exchanges"}
    assert len({KEYS.exchange_heartbeat(e) for e in EXCHANGES}) == len(EXCHANGES)
    assert KEYS.exchange_heartbeat("coinbase") != KEYS.exchange_writer_lock("coinbase")


def test_per_api_key_names_share_the_key_id_tag() -> None:
    assert hash_tag(KEYS.rate_limit(42)) == hash_tag(KEYS.ws_connections(42)) == "apikey:42"
    assert KEYS.rate_limit(4) != KEYS.rate_limit(42)


def test_price_sources_index_is_per_symbol() -> None:
    assert hash_tag(KEYS.price_sources("BTC-USD")) == "BTC-USD"
    assert KEYS.price_sources("btc/usd") == KEYS.price_sources("BTC-USD")
    assert KEYS.price_sources("BTC-USD") != KEYS.price_sources("ETH-USD")


def test_the_documented_layout() -> None:
    keys = RedisKeys("perseus:")
    assert keys.latest_price("coinbase", "BTC-USD") == "perseus:price:latest:{coinbase:BTC-USD}"
    assert keys.price_sources("BTC-USD") == "perseus:price:sources:{BTC-USD}"
    assert keys.candle_window("coinbase", "BTC-USD", Timeframe.H1) == "perseus:candles:{coinbase:BTC-USD}:1h"
    assert keys.indicator_state("coinbase", "BTC-USD", "1h") == "perseus:indicator:{coinbase:BTC-USD}:1h"
    assert keys.candle_close_channel("coinbase", "BTC-USD", "1h") == "perseus:ch:candles:{coinbase:BTC-USD}:1h"
    assert keys.signal_channel("coinbase", "BTC-USD", "15m") == "perseus:ch:signals:{coinbase:BTC-USD}:15m"
    assert keys.price_channel("coinbase", "BTC-USD") == "perseus:ch:prices:{coinbase:BTC-USD}"
    assert keys.exchange_heartbeat("coinbase") == "perseus:exchange:heartbeat:{exchanges}:coinbase"
    assert keys.rate_limit(7) == "perseus:ratelimit:{apikey:7}"
    assert keys.key_auth_cache("0f" * 32) == "perseus:auth:" + "0f" * 32


def test_stream_names_follow_the_public_identity_with_the_default_exchange_resolved() -> None:
    short = parse_channel("candles:btc/usd:1h").resolve("coinbase")
    explicit = parse_channel("candles:coinbase:BTC-USD:1h")
    assert KEYS.stream_sequence(short) == KEYS.stream_sequence(explicit)
    assert KEYS.stream_history(short) == KEYS.stream_history(explicit)
    assert KEYS.stream_channel(short) == KEYS.candle_close_channel("coinbase", "BTC-USD", "1h")
    assert KEYS.stream_channel(parse_channel("signals:sim:ETH-USD:5m")) == KEYS.signal_channel("sim", "ETH-USD", "5m")
    assert KEYS.stream_channel(parse_channel("prices:kraken:ETH-USD")) == KEYS.price_channel("kraken", "ETH-USD")
    other = parse_channel("candles:binance:BTC-USD:1h")
    assert KEYS.stream_sequence(other) != KEYS.stream_sequence(explicit)


def test_internal_names_are_not_the_public_channel_names() -> None:
    channel = parse_channel("candles:coinbase:BTC-USD:1h")
    public = channel.public_name("sim")
    for name in (KEYS.stream_channel(channel), KEYS.stream_sequence(channel), KEYS.stream_history(channel)):
        assert name != public
        assert name.startswith(PREFIX)


def test_an_unresolved_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="resolve"):
        KEYS.stream_sequence(parse_channel("candles:BTC-USD:1h"))


def test_symbols_are_canonicalised_so_one_pair_has_one_key() -> None:
    assert KEYS.latest_price("coinbase", "btc/usd") == KEYS.latest_price("coinbase", "BTC-USD")
    assert KEYS.candle_window("sim", "eth-usd", "1H") == KEYS.candle_window("sim", "ETH-USD", Timeframe.H1)


@pytest.mark.parametrize("prefix", ["", "perseus:", "perseus-test:abc123:"])
def test_prefix_is_configurable(prefix: str) -> None:
    keys = RedisKeys(prefix)
    assert keys.prefix == prefix
    assert all(name.startswith(prefix) for name in all_names(keys))
    assert RedisKeys().prefix == DEFAULT_PREFIX


def test_two_prefixes_never_collide() -> None:
    assert not set(all_names(RedisKeys("a:"))) & set(all_names(RedisKeys("b:")))


@pytest.mark.parametrize("prefix", ["{x}:", "a b:", "p*:", "tab\t"])
def test_a_prefix_that_would_break_tags_or_patterns_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisKeys(prefix)


@pytest.mark.parametrize("exchange", ["", "Coinbase", "coin base", "{coinbase}", "coin:base", "x" * 65, "a*"])
def test_malformed_exchange_or_source_names_are_refused(exchange: str) -> None:
    with pytest.raises(ValueError, match="name"):
        KEYS.latest_price(exchange, "BTC-USD")
    with pytest.raises(ValueError):
        KEYS.exchange_heartbeat(exchange)


@pytest.mark.parametrize(
    "call",
    [
        lambda: KEYS.latest_price("coinbase", "BTCUSD"),
        lambda: KEYS.candle_window("coinbase", "BTC-USD", "2h"),
        lambda: KEYS.signal_channel("coinbase", "BTC-USD", ""),
        lambda: KEYS.rate_limit(-1),
        lambda: KEYS.ws_connections(True),
        lambda: KEYS.key_auth_cache("not-hex"),
        lambda: KEYS.key_auth_cache("AB" * 32),
        lambda: KEYS.stream_channel(Channel(ChannelFamily.PRICES, "sim", "BTC-USD", Timeframe.H1)),
        lambda: KEYS.stream_channel(Channel(ChannelFamily.CANDLES, "sim", "BTC-USD", None)),
    ],
)
def test_bad_components_are_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("key", "tag"),
    [("a{b}c", "b"), ("a{}c{d}", None), ("a{b}{c}", "b"), ("abc", None), ("a{bc", None), ("{x:y}:z", "x:y")],
)
def test_hash_tag_follows_the_redis_cluster_rule(key: str, tag: str | None) -> None:
    assert hash_tag(key) == tag
