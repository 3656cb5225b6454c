"""Price queries without I/O: validation, one vote per source, the freshest source, buckets, cache fallback."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.adapters.postgres import ms_to_datetime
from core.adapters.price_cache import LatestPrice
from core.adapters.price_queries_pg import PgPriceHistory, bucket_interval, datetime_to_ms
from core.codec import messages
from core.domain.errors import InvalidArgument, Unavailable
from core.domain.timeframes import Timeframe
from core.services.price_queries import (
    CONSENSUS_WINDOW_MS,
    MAX_RANGE_MS,
    MAX_SYMBOLS,
    PriceBucket,
    PriceQueries,
    RangeQuery,
    freshest,
    parse_symbols,
    range_query,
    votes_by_symbol,
)
from perseus.marketdata.v1 import common_pb2

D = Decimal
HOUR_MS = 3_600_000


def tick(symbol: str, source: str, price: str, ts_ms: int, volume: str = "1") -> LatestPrice:
    return LatestPrice(symbol, source, D(price), D(volume), ts_ms)


def test_a_chatty_source_has_one_vote_its_newest_price() -> None:
    rows = [tick("A-USD", "coinbase", str(100 + i), 1_000 + i) for i in range(50)]
    rows += [tick("A-USD", "kraken", "10", 500), tick("B-USD", "kraken", "7", 900)]
    assert votes_by_symbol(reversed(rows)) == {
        "A-USD": {"coinbase": D("149"), "kraken": D("10")},
        "B-USD": {"kraken": D("7")},
    }


def test_the_freshest_source_wins_and_a_tie_goes_to_the_first_name() -> None:
    assert freshest([tick("A-USD", "kraken", "1", 5), tick("A-USD", "coinbase", "2", 9)]).source == "coinbase"
    assert freshest([tick("A-USD", "kraken", "1", 9), tick("A-USD", "binance", "2", 9)]).source == "binance"
    assert freshest([]) is None


# --- validation -------------------------------------------------------------------------------------------


def test_symbols_are_canonical_and_deduplicated_in_request_order() -> None:
    assert parse_symbols(["eth/usd", "BTC-USD", "ETH-USD"]) == ["ETH-USD", "BTC-USD"]


@pytest.mark.parametrize(
    ("symbols", "message"),
    [
        ([], "at least one symbol"),
        (["BTC-USD", "BTC_USD!"], "'BTC_USD!'"),
        (["BTC-USD"] * (MAX_SYMBOLS + 1), f"at most {MAX_SYMBOLS} symbols per request (got {MAX_SYMBOLS + 1})"),
    ],
)
def test_bad_symbol_lists_are_refused_by_name(symbols: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_symbols(symbols)


def test_a_range_query_gets_its_defaults() -> None:
    query = range_query("qry/usd", start_ms=0, end_ms=HOUR_MS, interval=None, source=" Binance ", limit=0)
    assert query == RangeQuery("QRY-USD", 0, HOUR_MS, Timeframe.H1, "binance", 1_000)
    query = range_query("QRY-USD", start_ms=5, end_ms=5 + MAX_RANGE_MS, interval=Timeframe.M1, source="", limit=10_000)
    assert (query.interval, query.source, query.limit) == (Timeframe.M1, None, 10_000)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"start_ms": None}, "start_time is required"),
        ({"end_ms": None}, "end_time is required"),
        ({"end_ms": 1_000}, "end_time must be after start_time"),
        ({"end_ms": 999}, "end_time must be after start_time"),
        ({"end_ms": 1_000 + MAX_RANGE_MS + 1}, "longer than 730 days"),
        ({"start_ms": -1}, "start_time must be between"),
        ({"limit": -1}, "limit must be 1 to 10000"),
        ({"limit": 10_001}, r"limit must be 1 to 10000, or 0 for 1000 \(got 10001\)"),
        ({"source": "x" * 65}, "source is longer than 64"),
        ({"symbol": "QRY"}, "'QRY'"),
    ],
)
def test_bad_range_queries_are_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    request: dict[str, Any] = {
        "symbol": "QRY-USD",
        "start_ms": 1_000,
        "end_ms": 1_000 + HOUR_MS,
        "interval": None,
        "source": "",
        "limit": 0,
    }
    request.update(fields)
    with pytest.raises(InvalidArgument, match=message):
        range_query(request.pop("symbol"), **request)


def test_interval_enum_values_map_to_timeframes() -> None:
    assert messages.timeframe_from_pb(common_pb2.TIMEFRAME_UNSPECIFIED, field="interval") is None
    assert messages.timeframe_from_pb(common_pb2.TIMEFRAME_4H, field="interval") is Timeframe.H4
    with pytest.raises(InvalidArgument, match="unknown interval 99"):
        messages.timeframe_from_pb(99, field="interval")


# --- bucket arithmetic ------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeframe", list(Timeframe))
def test_bucket_intervals_are_the_timeframe_lengths(timeframe: Timeframe) -> None:
    assert bucket_interval(timeframe) == timedelta(milliseconds=timeframe.ms)


def test_bucket_boundaries_are_utc_epoch_multiples() -> None:
    ts = datetime_to_ms(datetime(2025, 10, 9, 13, 47, 12, 345_000, tzinfo=UTC))
    assert ms_to_datetime(Timeframe.H4.open_time(ts)) == datetime(2025, 10, 9, 12, tzinfo=UTC)
    assert ms_to_datetime(Timeframe.D1.open_time(ts)) == datetime(2025, 10, 9, tzinfo=UTC)
    assert ms_to_datetime(Timeframe.M15.open_time(ts)) == datetime(2025, 10, 9, 13, 45, tzinfo=UTC)
    assert datetime_to_ms(ms_to_datetime(ts)) == ts


# --- the service over fake ports --------------------------------------------------------------------------


class FakeCache:
    def __init__(self, prices: Sequence[LatestPrice], *, broken: bool = False) -> None:
        self.prices = list(prices)
        self.broken = broken

    async def latest(self, symbol: str) -> list[LatestPrice]:
        if self.broken:
            raise ConnectionError("redis is down")
        return sorted((p for p in self.prices if p.symbol == symbol), key=lambda p: -p.ts_ms)


@dataclass
class FakeHistory:
    prices: list[LatestPrice] = field(default_factory=list)
    asked: list[list[str]] = field(default_factory=list)
    windows: list[tuple[int, int]] = field(default_factory=list)

    async def latest(self, symbols: Sequence[str]) -> list[LatestPrice]:
        self.asked.append(list(symbols))
        return [p for p in self.prices if p.symbol in symbols]

    async def buckets(self, query: RangeQuery) -> list[PriceBucket]:
        return [PriceBucket(query.start_ms, D(1), D(2), D(1), D(2), D(3), 4)]

    async def latest_per_source(self, symbols: Sequence[str], *, after_ms: int, until_ms: int) -> list[LatestPrice]:
        self.windows.append((after_ms, until_ms))
        return [p for p in self.prices if p.symbol in symbols and after_ms < p.ts_ms <= until_ms]


NOW = 1_000_000


async def test_latest_reads_the_cache_then_postgres_for_the_rest() -> None:
    cache = FakeCache([tick("A-USD", "kraken", "1.0", NOW - 300), tick("A-USD", "coinbase", "1.1", NOW - 100)])
    history = FakeHistory([tick("B-USD", "binance", "2", NOW + 5_000), tick("B-USD", "sim", "3", NOW - 1)])
    quotes = await PriceQueries(cache, history, clock_ms=lambda: NOW).latest(["C-USD", "b/usd", "A-USD"])
    assert [(q.symbol, q.source, str(q.price), q.staleness_ms) for q in quotes] == [
        ("B-USD", "binance", "2", 0),  # a tick slightly ahead of our clock is not negatively stale
        ("A-USD", "coinbase", "1.1", 100),
    ]
    assert history.asked == [["C-USD", "B-USD"]]


async def test_latest_falls_back_to_postgres_when_the_cache_fails() -> None:
    history = FakeHistory([tick("A-USD", "kraken", "1.0", NOW - 300)])
    queries = PriceQueries(FakeCache([], broken=True), history, clock_ms=lambda: NOW)
    assert [(q.source, q.staleness_ms) for q in await queries.latest(["A-USD"])] == [("kraken", 300)]


async def test_consensus_uses_the_window_ending_at_the_requested_time() -> None:
    end = 10 * CONSENSUS_WINDOW_MS
    history = FakeHistory(
        [
            tick("A-USD", "coinbase", "100", end),
            tick("A-USD", "kraken", "90", end - CONSENSUS_WINDOW_MS),  # the window's start is excluded
            tick("A-USD", "binance", "110", end - CONSENSUS_WINDOW_MS + 1),
        ]
    )
    queries = PriceQueries(FakeCache([]), history, clock_ms=lambda: NOW)
    [result] = await queries.consensus(["A-USD", "Z-USD"], at_ms=end)
    assert (result.sources, str(result.median), result.ts_ms) == (("binance", "coinbase"), "105", end)
    await queries.consensus(["A-USD"], at_ms=None)
    assert history.windows[-1] == (NOW - CONSENSUS_WINDOW_MS, NOW)


class _RefusingPool:
    @asynccontextmanager
    async def _refuse(self) -> Any:
        raise ConnectionRefusedError("connection refused")
        yield

    def acquire(self, *, timeout: float) -> Any:
        return self._refuse()


async def test_an_unreachable_postgres_is_unavailable() -> None:
    history = PgPriceHistory(_RefusingPool(), sources=["sim"])  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="PostgreSQL is unavailable"):
        await history.latest(["A-USD"])
