"""Binance Spot protocol: stream URL, frames in the documented formats -> trades, candles, gaps, errors."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.adapters.venues.base import VenueError
from core.adapters.venues.binance import (
    DEFAULT_BASE,
    MAX_SYMBOLS_PER_CONNECTION,
    BinanceProtocol,
    binance_symbol,
)
from core.domain.market_events import ExchangeCandle, SequenceGap, Trade
from core.domain.symbols import InvalidSymbol
from tests.support.venues import parse_error

FIXTURES = Path(__file__).parent.parent / "fixtures" / "binance"
NOW_MS = 1_695_628_180_000


def frames(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def trade_frame(symbol: str = "BTCUSDT", trade_id: int = 100, **fields: Any) -> str:
    data = {"e": "trade", "E": 1_695_628_177_710, "s": symbol, "t": trade_id, "p": "26250.01000000"}
    data |= {"q": "0.00381000", "T": 1_695_628_177_708, "m": True, "M": True} | fields
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data})


def kline_frame(symbol: str = "BTCUSDT", *, closed: bool = False, interval: str = "1m") -> str:
    kline = {"t": 1_695_628_140_000, "T": 1_695_628_199_999, "s": symbol, "i": interval, "o": "1.10", "c": "1.20"}
    kline |= {"h": "1.30", "l": "1.00", "v": "10.5", "n": 3, "x": closed, "q": "12.6", "V": "5", "Q": "6", "B": "0"}
    data = {"e": "kline", "E": 1_695_628_178_002, "s": symbol, "k": kline}
    return json.dumps({"stream": f"{symbol.lower()}@kline_{interval}", "data": data})


@pytest.fixture
def protocol() -> BinanceProtocol:
    return BinanceProtocol(["BTC-USDT", "ETH/usdt"])


def test_streams_are_named_in_the_combined_stream_url(protocol: BinanceProtocol) -> None:
    assert protocol.name == "binance"
    assert protocol.symbols == ("BTC-USDT", "ETH-USDT")
    assert protocol.url() == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/btcusdt@kline_1m/ethusdt@trade/ethusdt@kline_1m"
    )
    assert list(protocol.subscribe_frames()) == []


def test_url_override_keeps_the_combined_stream_path() -> None:
    protocol = BinanceProtocol(["BTC-USDT"], url="ws://127.0.0.1:9999/")
    assert protocol.url() == "ws://127.0.0.1:9999/stream?streams=btcusdt@trade/btcusdt@kline_1m"
    assert DEFAULT_BASE == "wss://stream.binance.com:9443"


def test_symbol_mapping_drops_the_separator() -> None:
    assert binance_symbol("BTC-USDT") == "BTCUSDT"
    assert binance_symbol("eth/btc") == "ETHBTC"


def test_duplicate_symbols_are_subscribed_once() -> None:
    protocol = BinanceProtocol(["BTC-USDT", "btc/usdt"])
    assert protocol.symbols == ("BTC-USDT",)
    assert protocol.streams() == ["btcusdt@trade", "btcusdt@kline_1m"]


@pytest.mark.parametrize("symbols", [[], ["BTCUSDT"], ["AB-CD", "ABC-D"]])
def test_unusable_symbol_lists_are_refused(symbols: list[str]) -> None:
    with pytest.raises(ValueError):
        BinanceProtocol(symbols)


def test_malformed_symbol_raises_invalid_symbol() -> None:
    with pytest.raises(InvalidSymbol):
        BinanceProtocol(["BTC--USDT"])


def test_stream_limit_per_connection() -> None:
    symbols = [f"C{index}-USDT" for index in range(MAX_SYMBOLS_PER_CONNECTION + 1)]
    assert len(BinanceProtocol(symbols[:-1]).streams()) == 1024
    with pytest.raises(ValueError, match="at most 1024"):
        BinanceProtocol(symbols)


def test_idle_timeout_outlasts_the_server_ping_interval(protocol: BinanceProtocol) -> None:
    assert protocol.idle_timeout_s > 20


def test_trade_frame_becomes_a_trade_with_exact_decimals(protocol: BinanceProtocol) -> None:
    parsed = protocol.parse(frames("session.jsonl")[0], NOW_MS)
    assert parsed.replies == []
    assert parsed.events == [
        Trade(
            exchange="binance",
            symbol="BTC-USDT",
            price=Decimal("26250.01000000"),
            size=Decimal("0.00381000"),
            ts_ms=1_695_628_177_708,  # T, the trade time, not E, the event time
            trade_id="3229461770",
        )
    ]
    trade = parsed.events[0]
    assert isinstance(trade, Trade)
    assert str(trade.price) == "26250.01000000"


def test_bytes_frames_are_read_too(protocol: BinanceProtocol) -> None:
    assert len(protocol.parse(trade_frame().encode(), NOW_MS).events) == 1


def test_kline_frames_become_candles_with_the_closed_flag(protocol: BinanceProtocol) -> None:
    lines = frames("session.jsonl")
    running, final = protocol.parse(lines[1], NOW_MS).events, protocol.parse(lines[5], NOW_MS).events
    assert running == [
        ExchangeCandle(
            exchange="binance",
            symbol="BTC-USDT",
            open_time_ms=1_695_628_140_000,
            open=Decimal("26248.50000000"),
            high=Decimal("26251.00000000"),
            low=Decimal("26248.10000000"),
            close=Decimal("26250.01000000"),
            volume=Decimal("12.34567000"),
            closed=False,
        )
    ]
    assert len(final) == 1 and isinstance(final[0], ExchangeCandle)
    assert final[0].closed is True
    assert final[0].open_time_ms == 1_695_628_140_000
    assert final[0].volume == Decimal("12.46567000")


def test_session_fixture_yields_one_event_per_frame_in_order(protocol: BinanceProtocol) -> None:
    events = [event for line in frames("session.jsonl") for event in protocol.parse(line, NOW_MS).events]
    kinds = [(type(event).__name__, event.symbol) for event in events]
    assert kinds == [
        ("Trade", "BTC-USDT"),
        ("ExchangeCandle", "BTC-USDT"),
        ("Trade", "ETH-USDT"),
        ("Trade", "BTC-USDT"),
        ("ExchangeCandle", "ETH-USDT"),
        ("ExchangeCandle", "BTC-USDT"),
        ("ExchangeCandle", "BTC-USDT"),
    ]
    assert not any(isinstance(event, SequenceGap) for event in events)


def test_trade_id_jump_is_a_gap_per_symbol(protocol: BinanceProtocol) -> None:
    events = [event for line in frames("gap.jsonl") for event in protocol.parse(line, NOW_MS).events]
    gaps = [event for event in events if isinstance(event, SequenceGap)]
    assert gaps == [SequenceGap(exchange="binance", symbol="BTC-USDT", expected=3229461774, received=3229461777)]
    gap_index = events.index(gaps[0])
    assert isinstance(events[gap_index + 1], Trade)  # the gap comes before the trade that revealed it
    assert events[gap_index + 1].trade_id == "3229461777"  # type: ignore[union-attr]
    assert sum(isinstance(event, Trade) for event in events) == 5


def test_a_single_missing_trade_is_a_gap(protocol: BinanceProtocol) -> None:
    protocol.parse(trade_frame(trade_id=100), NOW_MS)
    gap, trade = protocol.parse(trade_frame(trade_id=102), NOW_MS).events
    assert gap == SequenceGap(exchange="binance", symbol="BTC-USDT", expected=101, received=102)
    assert isinstance(trade, Trade) and trade.trade_id == "102"


def test_trade_ids_of_different_symbols_are_independent(protocol: BinanceProtocol) -> None:
    protocol.parse(trade_frame("BTCUSDT", 100), NOW_MS)
    protocol.parse(trade_frame("ETHUSDT", 5_000), NOW_MS)
    events = protocol.parse(trade_frame("BTCUSDT", 101), NOW_MS).events
    assert [type(event) for event in events] == [Trade]


def test_repeated_trade_id_is_no_gap_and_keeps_the_high_water_mark(protocol: BinanceProtocol) -> None:
    protocol.parse(trade_frame(trade_id=100), NOW_MS)
    assert [type(event) for event in protocol.parse(trade_frame(trade_id=100), NOW_MS).events] == [Trade]
    assert [type(event) for event in protocol.parse(trade_frame(trade_id=99), NOW_MS).events] == [Trade]
    assert [type(event) for event in protocol.parse(trade_frame(trade_id=101), NOW_MS).events] == [Trade]


def test_a_new_connection_starts_without_a_trade_id(protocol: BinanceProtocol) -> None:
    protocol.parse(trade_frame(trade_id=100), NOW_MS)
    fresh = BinanceProtocol(["BTC-USDT"])
    assert [type(event) for event in fresh.parse(trade_frame(trade_id=500), NOW_MS).events] == [Trade]


def test_subscribe_reply_produces_nothing(protocol: BinanceProtocol) -> None:
    assert protocol.parse(frames("errors.jsonl")[0], NOW_MS).events == []


@pytest.mark.parametrize("line", [1, 2, 3], ids=["code-msg", "error-object", "server-shutdown"])
def test_error_frames_are_fatal(protocol: BinanceProtocol, line: int) -> None:
    with pytest.raises(VenueError) as caught:
        protocol.parse(frames("errors.jsonl")[line], NOW_MS)
    assert caught.value.fatal is True


def test_error_message_names_code_and_text(protocol: BinanceProtocol) -> None:
    with pytest.raises(VenueError, match=r"code 3.*Invalid JSON"):
        protocol.parse(frames("errors.jsonl")[1], NOW_MS)


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        "[1, 2]",
        '{"stream":"btcusdt@trade"}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":NaN,"q":"1","T":1}}',
        b"\xff\xfe",
    ],
    ids=["truncated", "array", "no-data", "nan", "not-utf8"],
)
def test_unreadable_frames_are_non_fatal(protocol: BinanceProtocol, frame: str | bytes) -> None:
    assert parse_error(protocol, frame, NOW_MS).fatal is False


@pytest.mark.parametrize(
    "frame",
    [
        trade_frame(p="abc"),
        trade_frame(q="-1"),
        trade_frame(p="0.00000000"),
        trade_frame(t="100"),
        trade_frame(T=None),
        trade_frame(p="Infinity"),
    ],
    ids=["text-price", "negative-qty", "zero-price", "text-id", "no-time", "infinite"],
)
def test_malformed_trade_fields_are_non_fatal(protocol: BinanceProtocol, frame: str) -> None:
    assert parse_error(protocol, frame, NOW_MS).fatal is False


def test_a_json_number_price_is_read_without_a_binary_float(protocol: BinanceProtocol) -> None:
    frame = trade_frame().replace('"p": "26250.01000000"', '"p": 0.30000000000000004')
    (trade,) = protocol.parse(frame, NOW_MS).events
    assert isinstance(trade, Trade)
    assert trade.price == Decimal("0.30000000000000004")


def test_malformed_trade_does_not_move_the_trade_id(protocol: BinanceProtocol) -> None:
    protocol.parse(trade_frame(trade_id=100), NOW_MS)
    with pytest.raises(VenueError):
        protocol.parse(trade_frame(trade_id=105, p="bad"), NOW_MS)
    assert [type(event) for event in protocol.parse(trade_frame(trade_id=101), NOW_MS).events] == [Trade]


@pytest.mark.parametrize(
    "frame",
    [
        trade_frame("SOLUSDT"),
        kline_frame("XRPUSDT"),
        kline_frame(interval="5m"),
        json.dumps({"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade", "s": "BTCUSDT", "a": 1}}),
    ],
    ids=["trade-other-symbol", "kline-other-symbol", "kline-5m", "aggtrade"],
)
def test_unsubscribed_symbols_and_streams_are_skipped(protocol: BinanceProtocol, frame: str) -> None:
    assert protocol.parse(frame, NOW_MS).events == []


def test_a_skipped_symbol_leaves_trade_ids_alone(protocol: BinanceProtocol) -> None:
    protocol.parse(trade_frame(trade_id=100), NOW_MS)
    protocol.parse(trade_frame("SOLUSDT", trade_id=900), NOW_MS)
    assert [type(event) for event in protocol.parse(trade_frame(trade_id=101), NOW_MS).events] == [Trade]


def test_kline_needs_a_boolean_closed_flag(protocol: BinanceProtocol) -> None:
    frame = kline_frame().replace('"x": false', '"x": "false"')
    with pytest.raises(VenueError, match="'x'"):
        protocol.parse(frame, NOW_MS)


def test_kline_volume_may_be_zero_but_prices_may_not(protocol: BinanceProtocol) -> None:
    (candle,) = protocol.parse(kline_frame().replace('"v": "10.5"', '"v": "0.00000000"'), NOW_MS).events
    assert isinstance(candle, ExchangeCandle) and candle.volume == 0
    with pytest.raises(VenueError, match="'o'"):
        protocol.parse(kline_frame().replace('"o": "1.10"', '"o": "0"'), NOW_MS)
