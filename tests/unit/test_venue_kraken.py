"""Kraken v2 protocol: subscribe frames, frames in the documented formats -> trades, candles, gaps, errors."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.adapters.venues.base import VenueError
from core.adapters.venues.kraken import DEFAULT_URL, KrakenProtocol, kraken_symbol
from core.domain.market_events import ExchangeCandle, MarketEvent, SequenceGap, Trade
from tests.support.venues import parse_error

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kraken"
NOW_MS = 1_695_628_180_000
MINUTE_MS = 60_000
T_0749 = 1_695_628_140_000  # 2023-09-25T07:49:00Z


def frames(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def parse_all(protocol: KrakenProtocol, lines: list[str]) -> list[MarketEvent]:
    return [event for line in lines for event in protocol.parse(line, NOW_MS).events]


def trade_frame(trade_id: int = 100, symbol: str = "BTC/USD", price: str = "26250.1", **fields: Any) -> str:
    entry = {"symbol": symbol, "side": "buy", "price": "@PRICE@", "qty": 0.5, "ord_type": "market"}
    entry |= {"trade_id": trade_id, "timestamp": "2023-09-25T07:49:37.708706Z"} | fields
    return json.dumps({"channel": "trade", "type": "update", "data": [entry]}).replace('"@PRICE@"', price)


def ohlc_frame(begin: str, close: str = "26250.1", symbol: str = "BTC/USD", interval: int = 1) -> str:
    entry = {"symbol": symbol, "open": 1.5, "high": 2.5, "low": 1.25, "close": "@CLOSE@", "trades": 3}
    entry |= {"volume": 0.75, "vwap": 2.0, "interval_begin": begin, "interval": interval, "timestamp": begin}
    return json.dumps({"channel": "ohlc", "type": "update", "data": [entry]}).replace('"@CLOSE@"', close)


@pytest.fixture
def protocol() -> KrakenProtocol:
    return KrakenProtocol(["BTC-USD", "eth/usd"])


def test_subscribe_frames_name_every_symbol_per_channel(protocol: KrakenProtocol) -> None:
    assert protocol.name == "kraken"
    assert protocol.url() == DEFAULT_URL == "wss://ws.kraken.com/v2"
    assert [json.loads(frame) for frame in protocol.subscribe_frames()] == [
        {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": True}},
        {"method": "subscribe", "params": {"channel": "ohlc", "symbol": ["BTC/USD", "ETH/USD"], "interval": 1}},
    ]


def test_url_override_and_symbol_mapping() -> None:
    protocol = KrakenProtocol(["BTC-USD", "BTC/USD"], url="ws://127.0.0.1:9999/v2")
    assert protocol.url() == "ws://127.0.0.1:9999/v2"
    assert protocol.symbols == ("BTC-USD",)
    assert kraken_symbol("eth-usd") == "ETH/USD"


@pytest.mark.parametrize("symbols", [[], ["BTCUSD"]])
def test_unusable_symbol_lists_are_refused(symbols: list[str]) -> None:
    with pytest.raises(ValueError):
        KrakenProtocol(symbols)


def test_idle_timeout_covers_missed_heartbeats(protocol: KrakenProtocol) -> None:
    assert 5 <= protocol.idle_timeout_s <= 15


def test_json_numbers_become_exact_decimals(protocol: KrakenProtocol) -> None:
    (trade,) = protocol.parse(trade_frame(price="27000.12345678", qty=0.1), NOW_MS).events
    assert isinstance(trade, Trade)
    assert trade.price == Decimal("27000.12345678")
    assert str(trade.price) == "27000.12345678"
    assert str(trade.size) == "0.1"


def test_float_artifact_digits_survive_unrounded(protocol: KrakenProtocol) -> None:
    (trade,) = protocol.parse(trade_frame(price="0.30000000000000004"), NOW_MS).events
    assert isinstance(trade, Trade)
    assert trade.price == Decimal("0.30000000000000004")


def test_more_digits_than_a_float_holds_are_kept(protocol: KrakenProtocol) -> None:
    (trade,) = protocol.parse(trade_frame(price="27000.123456789012345678"), NOW_MS).events
    assert isinstance(trade, Trade)
    assert str(trade.price) == "27000.123456789012345678"  # repr(float) would say 27000.123456789013


def test_integer_prices_are_decimals_too(protocol: KrakenProtocol) -> None:
    (trade,) = protocol.parse(trade_frame(price="27000"), NOW_MS).events
    assert isinstance(trade, Trade) and trade.price == Decimal(27000) and isinstance(trade.price, Decimal)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2023-09-25T07:49:37.708706Z", 1_695_628_177_708),
        ("2023-09-25T07:49:37.708999999Z", 1_695_628_177_708),  # truncated, never rounded up
        ("2023-09-25T07:49:37Z", 1_695_628_177_000),
        ("2023-09-25T09:49:37.5+02:00", 1_695_628_177_500),
    ],
)
def test_rfc3339_timestamps_become_utc_milliseconds(protocol: KrakenProtocol, stamp: str, expected: int) -> None:
    (trade,) = protocol.parse(trade_frame(timestamp=stamp), NOW_MS).events
    assert isinstance(trade, Trade) and trade.ts_ms == expected


@pytest.mark.parametrize("stamp", ["2023-09-25T07:49:37", "yesterday", 1695628177.708, None])
def test_timestamps_without_a_zone_or_not_text_are_rejected(protocol: KrakenProtocol, stamp: Any) -> None:
    with pytest.raises(VenueError, match="timestamp") as caught:
        protocol.parse(trade_frame(timestamp=stamp), NOW_MS)
    assert caught.value.fatal is False


def test_session_fixture(protocol: KrakenProtocol) -> None:
    events = parse_all(protocol, frames("session.jsonl"))
    trades = [event for event in events if isinstance(event, Trade)]
    candles = [event for event in events if isinstance(event, ExchangeCandle)]
    assert not any(isinstance(event, SequenceGap) for event in events)
    assert [trade.trade_id for trade in trades] == [
        "64350729", "64350730", "64350731", "33150411", "33150412", "64350732", "64350733",
    ]  # fmt: skip
    assert trades[4].size == Decimal("0.30000000000000004")
    assert trades[5] == Trade(
        exchange="kraken",
        symbol="BTC-USD",
        price=Decimal("27000.12345678"),
        size=Decimal("0.00012345"),
        ts_ms=1_695_628_177_708,
        trade_id="64350732",
    )
    assert [(c.symbol, c.open_time_ms, c.closed) for c in candles] == [
        ("BTC-USD", T_0749 - MINUTE_MS, False),  # snapshot: the 07:48 candle ...
        ("BTC-USD", T_0749 - MINUTE_MS, True),  # ... closes because the snapshot goes on to 07:49
        ("BTC-USD", T_0749, False),
        ("ETH-USD", T_0749, False),
        ("BTC-USD", T_0749, False),  # update of the running 07:49 candle
        ("BTC-USD", T_0749, True),  # 07:50 arrives: 07:49 closes with its last values
        ("BTC-USD", T_0749 + MINUTE_MS, False),
    ]
    assert candles[5].close == Decimal("27000.12345678") == candles[5].high
    assert candles[5].volume == Decimal("0.30164345")


def test_control_frames_produce_no_events(protocol: KrakenProtocol) -> None:
    lines = frames("session.jsonl")
    for line in [*lines[:5], '{"channel":"heartbeat"}', '{"method":"pong","time_in":"x","time_out":"y"}']:
        assert protocol.parse(line, NOW_MS).events == []


def test_engine_status_other_than_online_is_logged(protocol: KrakenProtocol, caplog: pytest.LogCaptureFixture) -> None:
    frame = frames("session.jsonl")[0].replace('"online"', '"maintenance"')
    with caplog.at_level(logging.WARNING, logger="core.adapters.venues.kraken"):
        assert protocol.parse(frame, NOW_MS).events == []
    assert "maintenance" in caplog.text


def test_trade_id_jump_is_a_gap_per_symbol(protocol: KrakenProtocol) -> None:
    events = parse_all(protocol, frames("gap.jsonl"))
    assert [type(event).__name__ for event in events] == ["Trade", "Trade", "Trade", "SequenceGap", "Trade", "Trade"]
    assert events[3] == SequenceGap(exchange="kraken", symbol="BTC-USD", expected=64350742, received=64350745)
    assert events[4].trade_id == "64350745"  # type: ignore[union-attr]


def test_a_single_missing_trade_is_a_gap(protocol: KrakenProtocol) -> None:
    events = parse_all(protocol, [trade_frame(100), trade_frame(102)])
    assert events[1] == SequenceGap(exchange="kraken", symbol="BTC-USD", expected=101, received=102)


def test_repeated_trade_id_is_no_gap(protocol: KrakenProtocol) -> None:
    parse_all(protocol, [trade_frame(100), trade_frame(101)])
    assert [type(e) for e in parse_all(protocol, [trade_frame(101), trade_frame(99), trade_frame(102)])] == [Trade] * 3


def test_a_bad_entry_rejects_the_whole_frame_and_keeps_state(protocol: KrakenProtocol) -> None:
    protocol.parse(trade_frame(100), NOW_MS)
    good = json.loads(trade_frame(101))["data"][0]
    bad = json.loads(trade_frame(150, qty="lots"))["data"][0]
    with pytest.raises(VenueError):
        protocol.parse(json.dumps({"channel": "trade", "type": "update", "data": [good, bad]}), NOW_MS)
    assert [type(event) for event in protocol.parse(trade_frame(101), NOW_MS).events] == [Trade]


def test_ohlc_update_is_the_running_candle(protocol: KrakenProtocol) -> None:
    (candle,) = protocol.parse(ohlc_frame("2023-09-25T07:49:00.000000000Z", close="2.123456789"), NOW_MS).events
    assert candle == ExchangeCandle(
        exchange="kraken",
        symbol="BTC-USD",
        open_time_ms=T_0749,
        open=Decimal("1.5"),
        high=Decimal("2.5"),
        low=Decimal("1.25"),
        close=Decimal("2.123456789"),
        volume=Decimal("0.75"),
        closed=False,
    )


def test_later_interval_closes_the_previous_one_per_symbol(protocol: KrakenProtocol) -> None:
    protocol.parse(ohlc_frame("2023-09-25T07:49:00Z", close="1.1"), NOW_MS)
    protocol.parse(ohlc_frame("2023-09-25T07:49:00Z", close="1.2"), NOW_MS)
    other = protocol.parse(ohlc_frame("2023-09-25T07:50:00Z", symbol="ETH/USD"), NOW_MS).events
    assert [c.closed for c in other] == [False]  # type: ignore[union-attr]  # ETH's first candle closes nothing
    closed, running = protocol.parse(ohlc_frame("2023-09-25T07:50:00Z", close="1.3"), NOW_MS).events
    assert isinstance(closed, ExchangeCandle) and isinstance(running, ExchangeCandle)
    assert (closed.open_time_ms, closed.close, closed.closed) == (T_0749, Decimal("1.2"), True)
    assert (running.open_time_ms, running.close, running.closed) == (T_0749 + MINUTE_MS, Decimal("1.3"), False)


def test_late_ohlc_entry_is_dropped(protocol: KrakenProtocol) -> None:
    protocol.parse(ohlc_frame("2023-09-25T07:50:00Z"), NOW_MS)
    assert protocol.parse(ohlc_frame("2023-09-25T07:49:00Z"), NOW_MS).events == []


def test_only_one_minute_candles_are_read(protocol: KrakenProtocol) -> None:
    assert protocol.parse(ohlc_frame("2023-09-25T07:45:00Z", interval=5), NOW_MS).events == []


def test_refused_subscription_is_fatal(protocol: KrakenProtocol) -> None:
    with pytest.raises(VenueError, match="Currency pair not supported") as caught:
        protocol.parse(frames("errors.jsonl")[0], NOW_MS)
    assert caught.value.fatal is True


def test_other_refused_requests_are_not_fatal(protocol: KrakenProtocol) -> None:
    with pytest.raises(VenueError, match="Method not supported") as caught:
        protocol.parse(frames("errors.jsonl")[1], NOW_MS)
    assert caught.value.fatal is False


@pytest.mark.parametrize(
    "frame",
    [
        '{"channel":"trade","data":',
        '"heartbeat"',
        '{"channel":"trade","type":"update","data":{"symbol":"BTC/USD"}}',
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","price":NaN}]}',
        trade_frame(price="-1"),
        trade_frame(trade_id="64350732"),  # type: ignore[arg-type]
        trade_frame(price='"27000.1"'),
        b"\xff",
    ],
    ids=["truncated", "not-object", "data-not-list", "nan", "negative", "text-id", "text-price", "not-utf8"],
)
def test_unreadable_frames_are_non_fatal(protocol: KrakenProtocol, frame: str | bytes) -> None:
    assert parse_error(protocol, frame, NOW_MS).fatal is False


@pytest.mark.parametrize(
    "frame",
    [
        trade_frame(symbol="SOL/USD"),
        ohlc_frame("2023-09-25T07:49:00Z", symbol="XBT/USD"),
        '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[]}]}',
    ],
    ids=["trade-other-symbol", "ohlc-other-symbol", "book-channel"],
)
def test_unsubscribed_symbols_and_channels_are_skipped(protocol: KrakenProtocol, frame: str) -> None:
    assert protocol.parse(frame, NOW_MS).events == []


def test_entries_of_other_symbols_are_skipped_within_a_frame(protocol: KrakenProtocol) -> None:
    ours = json.loads(trade_frame(100))["data"][0]
    other = json.loads(trade_frame(900, symbol="SOL/USD"))["data"][0]
    events = protocol.parse(json.dumps({"channel": "trade", "type": "update", "data": [other, ours]}), NOW_MS).events
    assert [(type(e), e.symbol) for e in events] == [(Trade, "BTC-USD")]


def test_candle_volume_may_be_zero_but_trade_size_may_not(protocol: KrakenProtocol) -> None:
    frame = ohlc_frame("2023-09-25T07:49:00Z").replace('"volume": 0.75', '"volume": 0.0')
    (candle,) = protocol.parse(frame, NOW_MS).events
    assert isinstance(candle, ExchangeCandle) and candle.volume == 0
    with pytest.raises(VenueError, match="'qty'"):
        protocol.parse(trade_frame(qty=0), NOW_MS)
