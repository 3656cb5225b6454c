"""CoinbaseProtocol: pure frames in, market events out (fixtures in tests/fixtures/coinbase)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from core.adapters.venues.base import VenueError
from core.adapters.venues.coinbase import DEFAULT_URL, CoinbaseProtocol
from core.domain.market_events import SequenceGap, Trade

FIXTURES = Path(__file__).parent.parent / "fixtures" / "coinbase"
NOW_MS = 1_695_628_300_000


def frames(name: str) -> list[str]:
    return [line for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


@pytest.fixture
def protocol() -> CoinbaseProtocol:
    return CoinbaseProtocol(["BTC-USD", "eth/usd"])


def test_defaults_and_subscribe_frames(protocol: CoinbaseProtocol) -> None:
    assert protocol.name == "coinbase"
    assert protocol.url() == DEFAULT_URL == "wss://advanced-trade-ws.coinbase.com"
    assert protocol.idle_timeout_s == 10.0
    assert [json.loads(f) for f in protocol.subscribe_frames()] == [
        {"type": "subscribe", "product_ids": [], "channel": "heartbeats"},
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"},
    ]


def test_overrides_and_bad_symbols() -> None:
    protocol = CoinbaseProtocol(["SOL-USD", "SOL/USD"], url="ws://127.0.0.1:1", idle_timeout_s=0.5)
    assert protocol.url() == "ws://127.0.0.1:1"
    assert protocol.idle_timeout_s == 0.5
    assert json.loads(protocol.subscribe_frames()[1])["product_ids"] == ["SOL-USD"]  # one spelling, once
    with pytest.raises(ValueError):
        CoinbaseProtocol([])
    with pytest.raises(ValueError):
        CoinbaseProtocol(["BTCUSD"])


def test_snapshot_trades_are_emitted_with_exact_decimals_and_utc_ms(protocol: CoinbaseProtocol) -> None:
    snapshot = frames("session.jsonl")[2]
    assert protocol.parse(snapshot, NOW_MS).events == [
        Trade("coinbase", "BTC-USD", Decimal("26250.01"), Decimal("0.00381"), 1_695_628_209_133, "572714612"),
        Trade("coinbase", "BTC-USD", Decimal("26249.99"), Decimal("0.12"), 1_695_628_208_982, "572714611"),
        Trade("coinbase", "ETH-USD", Decimal("1585.37"), Decimal("0.5123"), 1_695_628_207_500, "478103355"),
    ]


def test_session_yields_every_trade_in_order_and_nothing_else(protocol: CoinbaseProtocol) -> None:
    per_frame = [protocol.parse(line, NOW_MS) for line in frames("session.jsonl")]
    assert all(p.replies == [] for p in per_frame)
    # heartbeats (0, 4, 7) and subscriptions acks (1, 3) mean nothing downstream
    assert [len(p.events) for p in per_frame] == [0, 0, 3, 0, 0, 1, 2, 0, 1]
    events = [e for p in per_frame for e in p.events]
    assert all(isinstance(e, Trade) for e in events)
    assert [e.trade_id for e in events if isinstance(e, Trade)] == [
        "572714612", "572714611", "478103355", "572714613", "478103356", "572714614", "572714615",
    ]  # fmt: skip
    last = events[-1]
    assert isinstance(last, Trade)
    assert (last.price, last.size, last.ts_ms) == (Decimal("26250.02"), Decimal("0.0001"), 1_695_628_211_579)
    assert str(events[4].size) == "1.07000000"  # the venue's own precision is kept, never via float


def test_sequence_jump_emits_one_gap_per_subscribed_symbol(protocol: CoinbaseProtocol) -> None:
    lines = frames("gap.jsonl")
    assert protocol.parse(lines[0], NOW_MS).events == []
    assert len(protocol.parse(lines[1], NOW_MS).events) == 1
    events = protocol.parse(lines[2], NOW_MS).events  # 11 -> 14: 12 and 13 lost
    assert events[:2] == [
        SequenceGap("coinbase", "BTC-USD", expected=12, received=14),
        SequenceGap("coinbase", "ETH-USD", expected=12, received=14),
    ]
    assert [e.trade_id for e in events[2:] if isinstance(e, Trade)] == ["572714705"]
    assert protocol.parse(lines[3], NOW_MS).events == []  # 15 follows 14
    late = protocol.parse(lines[4], NOW_MS).events  # 13 arrives late: its trade counts, no new gap
    assert [type(e) for e in late] == [Trade]
    assert protocol.parse(lines[3].replace('"sequence_num":15', '"sequence_num":16'), NOW_MS).events == []


def test_a_new_connection_starts_a_new_sequence() -> None:
    first, second = CoinbaseProtocol(["BTC-USD"]), CoinbaseProtocol(["BTC-USD"])
    first.parse(frames("gap.jsonl")[0], NOW_MS)  # sequence 10
    assert second.parse(frames("session.jsonl")[0], NOW_MS).events == []  # sequence 0 on its own connection


def test_error_frame_is_fatal(protocol: CoinbaseProtocol) -> None:
    with pytest.raises(VenueError, match="failure to subscribe") as caught:
        protocol.parse(frames("errors.jsonl")[0], NOW_MS)
    assert caught.value.fatal


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (1, "unreadable frame"),  # truncated JSON
        (2, "not a JSON object"),
        (3, "not a decimal string"),  # a float price would lose exactness
        (4, "not an ISO-8601"),
        (5, "without channel or sequence_num"),
    ],
)
def test_unreadable_frames_are_not_fatal(protocol: CoinbaseProtocol, line: int, message: str) -> None:
    with pytest.raises(VenueError, match=message) as caught:
        protocol.parse(frames("errors.jsonl")[line], NOW_MS)
    assert not caught.value.fatal


@pytest.mark.parametrize(
    "trade",
    [
        {"price": "0", "size": "1"},
        {"price": "-1", "size": "1"},
        {"price": "NaN", "size": "1"},
        {"price": "1", "size": "0"},
        {"price": "1", "size": "1", "trade_id": 7},
        {"price": "1", "size": "1", "product_id": "BTCUSD"},
        {"price": "1", "size": "1", "time": "2023-02-30T00:00:00Z"},
    ],
)
def test_invalid_trade_fields_are_rejected(protocol: CoinbaseProtocol, trade: dict[str, object]) -> None:
    entry = {"trade_id": "1", "product_id": "BTC-USD", "side": "BUY", "time": "2023-09-25T07:50:09Z"} | trade
    frame = {"channel": "market_trades", "sequence_num": 1, "events": [{"type": "update", "trades": [entry]}]}
    with pytest.raises(VenueError) as caught:
        protocol.parse(json.dumps(frame), NOW_MS)
    assert not caught.value.fatal


def test_bytes_frames_and_bad_utf8(protocol: CoinbaseProtocol) -> None:
    assert len(protocol.parse(frames("session.jsonl")[2].encode(), NOW_MS).events) == 3
    with pytest.raises(VenueError):
        protocol.parse(b"\xff\xfe", NOW_MS)


def test_unknown_channels_are_ignored_but_counted_in_the_sequence(protocol: CoinbaseProtocol) -> None:
    candles = {
        "channel": "candles",
        "client_id": "",
        "timestamp": "2023-09-25T07:50:10.000000000Z",
        "sequence_num": 1,
        "events": [{"type": "update", "candles": [{"start": "1695628200", "open": "1", "high": "1", "low": "1",
                                                    "close": "1", "volume": "1", "product_id": "BTC-USD"}]}],
    }  # fmt: skip
    protocol.parse(frames("session.jsonl")[0], NOW_MS)  # sequence 0
    assert protocol.parse(json.dumps(candles), NOW_MS).events == []  # 5-minute candles are not our 1m candles
    heartbeat = frames("session.jsonl")[4].replace('"sequence_num":4', '"sequence_num":2')
    assert protocol.parse(heartbeat, NOW_MS).events == []  # 0, 1, 2: no gap


def test_trades_of_products_not_subscribed_are_skipped() -> None:
    protocol = CoinbaseProtocol(["ETH-USD"])
    events = protocol.parse(frames("session.jsonl")[2], NOW_MS).events
    assert [e.symbol for e in events if isinstance(e, Trade)] == ["ETH-USD"]
