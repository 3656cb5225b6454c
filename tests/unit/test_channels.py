"""Public channel names: every contract form parses, canonicalises, and garbage gets a clear error."""

from __future__ import annotations

import pytest

from core.domain.channels import (
    MAX_CHANNEL_LENGTH,
    Channel,
    ChannelFamily,
    InvalidChannel,
    parse_channel,
)
from core.domain.errors import InvalidArgument
from core.domain.timeframes import Timeframe

DEFAULT = "coinbase"
KNOWN = frozenset({"sim", "coinbase", "binance", "kraken"})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("candles:BTC-USD:1h", Channel(ChannelFamily.CANDLES, None, "BTC-USD", Timeframe.H1)),
        ("signals:ETH-USD:15m", Channel(ChannelFamily.SIGNALS, None, "ETH-USD", Timeframe.M15)),
        ("prices:BTC-USD", Channel(ChannelFamily.PRICES, None, "BTC-USD", None)),
        ("candles:coinbase:BTC-USD:1h", Channel(ChannelFamily.CANDLES, "coinbase", "BTC-USD", Timeframe.H1)),
        ("signals:binance:ETH-USDT:4h", Channel(ChannelFamily.SIGNALS, "binance", "ETH-USDT", Timeframe.H4)),
        ("prices:kraken:BTC-USD", Channel(ChannelFamily.PRICES, "kraken", "BTC-USD", None)),
        ("candles:btc/usd:1m", Channel(ChannelFamily.CANDLES, None, "BTC-USD", Timeframe.M1)),
        ("candles:BTC/USD:1D", Channel(ChannelFamily.CANDLES, None, "BTC-USD", Timeframe.D1)),
        ("Candles:Coinbase:btc-usd:5m", Channel(ChannelFamily.CANDLES, "coinbase", "BTC-USD", Timeframe.M5)),
        ("PRICES:sol/usd", Channel(ChannelFamily.PRICES, None, "SOL-USD", None)),
        ("  prices:BTC-USD  ", Channel(ChannelFamily.PRICES, None, "BTC-USD", None)),
        ("indicators:BTC-USD:1h", Channel(ChannelFamily.INDICATORS, None, "BTC-USD", Timeframe.H1)),
        ("indicators:kraken:eth/usd:4H", Channel(ChannelFamily.INDICATORS, "kraken", "ETH-USD", Timeframe.H4)),
    ],
)
def test_contract_forms_parse(name: str, expected: Channel) -> None:
    assert parse_channel(name, exchanges=KNOWN) == expected
    assert parse_channel(name) == expected


@pytest.mark.parametrize(
    ("name", "public"),
    [
        ("candles:btc/usd:1H", "candles:BTC-USD:1h"),
        ("candles:coinbase:BTC-USD:1h", "candles:BTC-USD:1h"),  # the default exchange is implied
        ("candles:binance:BTC-USD:1h", "candles:binance:BTC-USD:1h"),
        ("signals:eth/usd:15m", "signals:ETH-USD:15m"),
        ("signals:kraken:eth/usd:15m", "signals:kraken:ETH-USD:15m"),
        ("prices:btc/usd", "prices:BTC-USD"),
        ("prices:coinbase:btc-usd", "prices:BTC-USD"),
        ("prices:sim:btc-usd", "prices:sim:BTC-USD"),
    ],
)
def test_public_name_is_canonical_and_round_trips(name: str, public: str) -> None:
    channel = parse_channel(name)
    assert channel.public_name(DEFAULT) == public
    assert parse_channel(public).public_name(DEFAULT) == public
    assert parse_channel(public).resolve(DEFAULT) == channel.resolve(DEFAULT)


def test_resolve_fills_in_only_a_missing_exchange() -> None:
    short = parse_channel("candles:BTC-USD:1h")
    assert short.resolve("sim").exchange == "sim"
    assert short.exchange is None  # frozen: resolve returns a new value
    explicit = parse_channel("candles:kraken:BTC-USD:1h")
    assert explicit.resolve("sim").exchange == "kraken"


def test_channels_are_hashable_values() -> None:
    a = parse_channel("candles:btc/usd:1h")
    b = parse_channel("CANDLES:BTC-USD:1H")
    assert a == b
    assert len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.symbol = "ETH-USD"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("trades:BTC-USD", "unknown channel family"),
        ("candle:BTC-USD:1h", "unknown channel family"),
        ("orderbook:coinbase:BTC-USD", "unknown channel family"),
        ("candles:BTC-USD:2h", "unknown timeframe"),
        ("candles:BTC-USD:1w", "unknown timeframe"),
        ("signals:BTC-USD:60", "unknown timeframe"),
        ("candles:BTC-USD", "expected candles:SYMBOL:TF"),
        ("signals:BTC-USD", "expected signals:SYMBOL:TF"),
        ("candles:coinbase:BTC-USD:1h:extra", "expected candles:SYMBOL:TF"),
        ("prices", "expected prices:SYMBOL"),
        ("prices:coinbase:BTC-USD:1h", "expected prices:SYMBOL"),
        ("candles::BTC-USD:1h", "empty part"),
        ("candles:BTC-USD:", "empty part"),
        (":BTC-USD:1h", "empty part"),
        ("prices:BTC-USD:", "empty part"),
        ("prices: :BTC-USD", "empty part"),
        ("candles:BTCUSD:1h", "malformed symbol"),
        ("candles:BTC--USD:1h", "malformed symbol"),
        ("prices:BTC_USD", "malformed symbol"),
        ("prices:{BTC}-USD", "malformed symbol"),
        ("prices:BTC-USD*", "malformed symbol"),
        ("candles:coin base:BTC-USD:1h", "malformed exchange"),
        ("candles:{coinbase}:BTC-USD:1h", "malformed exchange"),
        ("prices:1coinbase:BTC-USD", "malformed exchange"),
        ("candles:" + "A" * 60 + "-" + "B" * 60 + ":1h", f"longer than {MAX_CHANNEL_LENGTH}"),
        ("prices:" + "x" * 500, f"longer than {MAX_CHANNEL_LENGTH}"),
    ],
)
def test_invalid_names_raise_a_clear_value_error(name: str, reason: str) -> None:
    with pytest.raises(InvalidChannel) as info:
        parse_channel(name)
    message = str(info.value)
    assert reason in message
    assert message.startswith("invalid channel ")
    assert "\n" not in message
    assert len(message) < 400  # an overlong name is not echoed whole
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, InvalidArgument)


def test_unknown_exchange_is_rejected_when_the_known_set_is_given() -> None:
    with pytest.raises(InvalidChannel, match="unknown exchange 'bitstamp'"):
        parse_channel("candles:bitstamp:BTC-USD:1h", exchanges=KNOWN)
    assert parse_channel("candles:bitstamp:BTC-USD:1h").exchange == "bitstamp"


def test_a_non_string_is_rejected_cleanly() -> None:
    with pytest.raises(InvalidChannel, match="must be a string"):
        parse_channel(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", list(ChannelFamily))
def test_every_family_and_timeframe_combination_parses(family: ChannelFamily) -> None:
    timeframes: list[Timeframe | None] = list(Timeframe) if family.has_timeframe else [None]
    for timeframe in timeframes:
        parts = [family.value, "BTC-USD"] + ([timeframe.value] if timeframe else [])
        channel = parse_channel(":".join(parts))
        assert (channel.family, channel.timeframe) == (family, timeframe)
        assert channel.public_name(DEFAULT) == ":".join(parts)
