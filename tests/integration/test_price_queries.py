"""Price queries through the real core over gRPC: latest prices (cache and PostgreSQL), OHLCV buckets from
stored ticks, and cross-source consensus, all on ticks ingested over gRPC with known timestamps."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from core.adapters.redis_keys import RedisKeys
from perseus.marketdata.v1 import (
    common_pb2,
    ingest_service_pb2 as ingest_pb,
    ingest_service_pb2_grpc as ingest_grpc,
    market_data_service_pb2 as md_pb,
    market_data_service_pb2_grpc as md_grpc,
    prices_pb2,
)
from tests.support.redis_target import sync_redis_client

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
# An hour boundary two days ago: every range and consensus tick is in the past and bucket-aligned.
BASE_MS = (int(time.time() * 1000) - 2 * DAY_MS) // HOUR_MS * HOUR_MS

Ingest = Callable[..., None]


def feed(symbol: str, price: str, source: str, ts_ms: int, volume: str = "1") -> prices_pb2.PriceFeed:
    message = prices_pb2.PriceFeed(symbol=symbol, price=price, volume=volume, source=source)
    message.timestamp.FromMilliseconds(ts_ms)
    return message


@pytest.fixture(scope="module")
def md(channel: grpc.Channel) -> md_grpc.MarketDataServiceStub:
    return md_grpc.MarketDataServiceStub(channel)


@pytest.fixture(scope="module")
def ingest(channel: grpc.Channel) -> Ingest:
    """Send one batch; every feed must be accepted."""
    stub = ingest_grpc.IngestServiceStub(channel)

    def send(*feeds: prices_pb2.PriceFeed) -> None:
        reply = stub.IngestPrices(ingest_pb.IngestPricesRequest(feeds=list(feeds)), timeout=5)
        assert (reply.ingested, reply.failed) == (len(feeds), 0), reply.errors

    return send


def code_of(call: object, *args: object, **kwargs: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=5, **kwargs)  # type: ignore[operator]
    return caught.value.code(), caught.value.details()


# --- latest prices ----------------------------------------------------------------------------------------


def test_latest_is_the_freshest_source_with_its_staleness(md: md_grpc.MarketDataServiceStub, ingest: Ingest) -> None:
    now = int(time.time() * 1000)
    ingest(feed("QRY1-USD", "100.10", "coinbase", now - 10_000), feed("QRY1-USD", "99.90", "binance", now - 20_000))
    ingest(feed("QRY1-USD", "100.30", "kraken", now - 3_000, volume="0.250"))
    # The ingest answers once PostgreSQL has the ticks; the cache is written just after, by the core's
    # coalescing task (on a cluster, its commands go to several masters): wait for the newest source.
    deadline = time.monotonic() + 5
    while True:
        before = int(time.time() * 1000)
        reply = md.GetLatestPrices(md_pb.GetLatestPricesRequest(symbols=["QRY1/USD", "QRYNONE-USD"]), timeout=5)
        after = int(time.time() * 1000)
        if [p.source for p in reply.prices] == ["kraken"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    [price] = reply.prices  # the symbol without any data is simply absent
    assert (price.symbol, price.price, price.volume, price.source) == ("QRY1-USD", "100.30", "0.250", "kraken")
    assert price.timestamp.ToMilliseconds() == now - 3_000
    assert before - (now - 3_000) <= price.staleness_ms <= after - (now - 3_000)


def test_latest_comes_from_postgres_when_the_cache_has_expired(
    md: md_grpc.MarketDataServiceStub,
    ingest: Ingest,
    redis_url: str,
    redis_prefix: str,
) -> None:
    now = int(time.time() * 1000)
    ingest(feed("QRY2-USD", "5.5", "sim", now - 60_000), feed("QRY2-USD", "5.25", "kraken", now - 50_000))
    ingest(feed("QRY2-USD", "5.75", "coinbase", now - 50_000))
    keys = RedisKeys(redis_prefix)
    client = sync_redis_client(redis_url)
    try:
        client.delete(keys.price_sources("QRY2-USD"), *(keys.latest_price(s, "QRY2-USD") for s in ("sim", "kraken")))
    finally:
        client.close()
    reply = md.GetLatestPrices(md_pb.GetLatestPricesRequest(symbols=["qry2-usd"]), timeout=5)
    # Tie on the timestamp: the source whose name sorts first, as on the cache path.
    assert [(p.symbol, p.price, p.source) for p in reply.prices] == [("QRY2-USD", "5.75", "coinbase")]
    assert reply.prices[0].staleness_ms >= 50_000


def test_latest_refuses_bad_and_too_many_symbols(md: md_grpc.MarketDataServiceStub) -> None:
    code, details = code_of(md.GetLatestPrices, md_pb.GetLatestPricesRequest(symbols=["QRY1-USD", "QRY$USD"]))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "'QRY$USD'" in details
    many = [f"Q{i}-USD" for i in range(101)]
    code, details = code_of(md.GetLatestPrices, md_pb.GetLatestPricesRequest(symbols=many))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "at most 100" in details


# --- price range ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def range_ticks(ingest: Ingest) -> None:
    b = BASE_MS
    ingest(feed("QRY3-USD", "10.0", "coinbase", b), feed("QRY3-USD", "12", "coinbase", b + 30_000, volume="0.50"))
    ingest(feed("QRY3-USD", "10.5", "binance", b, volume="2.0"))  # same ts as the coinbase open: a later id
    ingest(feed("QRY3-USD", "9.5", "kraken", b + 59_999))
    ingest(feed("QRY3-USD", "11", "coinbase", b + 60_000), feed("QRY3-USD", "11.25", "binance", b + 90_000))
    ingest(feed("QRY3-USD", "11.5", "binance", b + 119_000, volume="0.001"))
    ingest(feed("QRY3-USD", "11.4", "coinbase", b + 119_000))  # same ts as the binance close: a later id
    ingest(feed("QRY3-USD", "13", "coinbase", b + 61 * MINUTE_MS, volume="3"))
    ingest(feed("QRY3-USD", "99", "coinbase", b + 2 * HOUR_MS))  # at the (exclusive) end


def buckets(md: md_grpc.MarketDataServiceStub, **fields: object) -> list[tuple[int, str, str, str, str, str, int]]:
    request = md_pb.GetPriceRangeRequest(symbol="QRY3/USD", **fields)  # type: ignore[arg-type]
    if "start_time" not in fields:
        request.start_time.FromMilliseconds(BASE_MS)
    if "end_time" not in fields:
        request.end_time.FromMilliseconds(BASE_MS + 2 * HOUR_MS)
    reply = md.GetPriceRange(request, timeout=5)
    return [
        (b.timestamp.ToMilliseconds() - BASE_MS, b.open, b.high, b.low, b.close, b.volume, b.num_feeds)
        for b in reply.buckets
    ]


@pytest.mark.usefixtures("range_ticks")
def test_one_minute_buckets_are_exact_ohlcv(md: md_grpc.MarketDataServiceStub) -> None:
    assert buckets(md, interval=common_pb2.TIMEFRAME_1M) == [
        (0, "10.0", "12", "9.5", "9.5", "4.50", 4),
        (MINUTE_MS, "11", "11.5", "11", "11.4", "3.001", 4),
        (61 * MINUTE_MS, "13", "13", "13", "13", "3", 1),
    ]


@pytest.mark.usefixtures("range_ticks")
def test_hour_buckets_are_the_default_interval(md: md_grpc.MarketDataServiceStub) -> None:
    expected = [(0, "10.0", "12", "9.5", "11.4", "7.501", 8), (HOUR_MS, "13", "13", "13", "13", "3", 1)]
    assert buckets(md, interval=common_pb2.TIMEFRAME_1H) == expected
    assert buckets(md) == expected


@pytest.mark.usefixtures("range_ticks")
def test_a_source_filter_limit_and_partial_first_bucket(md: md_grpc.MarketDataServiceStub) -> None:
    assert buckets(md, source="Binance") == [(0, "10.5", "11.5", "10.5", "11.5", "3.001", 3)]
    assert buckets(md, interval=common_pb2.TIMEFRAME_1M, limit=2) == [
        (0, "10.0", "12", "9.5", "9.5", "4.50", 4),
        (MINUTE_MS, "11", "11.5", "11", "11.4", "3.001", 4),
    ]
    request = md_pb.GetPriceRangeRequest(symbol="QRY3-USD", interval=common_pb2.TIMEFRAME_1M, source="kraken")
    request.start_time.FromMilliseconds(BASE_MS + 30_000)  # mid-bucket: the bucket keeps its boundary
    request.end_time.FromMilliseconds(BASE_MS + MINUTE_MS)
    [bucket] = md.GetPriceRange(request, timeout=5).buckets
    assert (bucket.timestamp.ToMilliseconds(), bucket.open, bucket.num_feeds) == (BASE_MS, "9.5", 1)
    assert buckets(md, source="sim") == []


@pytest.mark.parametrize(
    ("start", "end", "extra", "message"),
    [
        (BASE_MS, None, {}, "end_time is required"),
        (None, BASE_MS, {}, "start_time is required"),
        (BASE_MS, BASE_MS, {}, "end_time must be after start_time"),
        (BASE_MS, BASE_MS + 731 * DAY_MS, {}, "longer than 730 days"),
        (BASE_MS, BASE_MS + HOUR_MS, {"limit": 10_001}, "limit must be 1 to 10000"),
        (BASE_MS, BASE_MS + HOUR_MS, {"interval": 42}, "unknown interval 42"),
        (BASE_MS, BASE_MS + HOUR_MS, {"symbol": "QRY3"}, "'QRY3'"),
    ],
)
def test_bad_ranges_are_invalid_arguments(
    md: md_grpc.MarketDataServiceStub, start: int | None, end: int | None, extra: dict[str, object], message: str
) -> None:
    request = md_pb.GetPriceRangeRequest(**{"symbol": "QRY3-USD", **extra})  # type: ignore[arg-type]
    if start is not None:
        request.start_time.FromMilliseconds(start)
    if end is not None:
        request.end_time.FromMilliseconds(end)
    code, details = code_of(md.GetPriceRange, request)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and message in details


# --- consensus --------------------------------------------------------------------------------------------

END_MS = BASE_MS + 3 * HOUR_MS


@pytest.fixture(scope="module")
def consensus_ticks(ingest: Ingest) -> None:
    # A chatty coinbase: 25 ticks in the window, only its newest (100.4) votes.
    ingest(*(feed("QRY4-USD", f"100.{i % 4}", "coinbase", END_MS - 240_000 + i * 9_000) for i in range(25)))
    ingest(feed("QRY4-USD", "100.4", "coinbase", END_MS - 10_000), feed("QRY4-USD", "500", "coinbase", END_MS + 1))
    ingest(feed("QRY4-USD", "101", "binance", END_MS - 60_000), feed("QRY4-USD", "99.5", "kraken", END_MS))
    ingest(feed("QRY4-USD", "150", "sim", END_MS - 5 * MINUTE_MS))  # on the window's (exclusive) start
    ingest(feed("QRY5-USD", "10", "coinbase", END_MS - 1_000), feed("QRY5-USD", "11", "kraken", END_MS - 2_000))
    ingest(feed("QRY6-USD", "7.25", "sim", END_MS - 1_000), feed("QRY6-USD", "8", "sim", END_MS - 400_000))


def consensus(md: md_grpc.MarketDataServiceStub, symbols: list[str], end_ms: int) -> list[tuple[object, ...]]:
    request = md_pb.GetConsensusRequest(symbols=symbols)
    request.time.FromMilliseconds(end_ms)
    return [
        (c.symbol, c.price, c.median, c.mean, c.std_dev, c.num_sources, list(c.sources), c.timestamp.ToMilliseconds())
        for c in md.GetConsensus(request, timeout=5).prices
    ]


@pytest.mark.usefixtures("consensus_ticks")
def test_consensus_gives_one_vote_per_source(md: md_grpc.MarketDataServiceStub) -> None:
    assert consensus(md, ["QRY4/USD", "QRY7-USD", "qry5-usd", "QRY6-USD"], END_MS) == [
        ("QRY4-USD", "100.4", "100.4", "100.3", "0.6164414", 3, ["binance", "coinbase", "kraken"], END_MS),
        ("QRY5-USD", "10.5", "10.5", "10.5", "0.5", 2, ["coinbase", "kraken"], END_MS),
        ("QRY6-USD", "7.25", "7.25", "7.25", "0.00", 1, ["sim"], END_MS),
    ]


@pytest.mark.usefixtures("consensus_ticks")
def test_consensus_without_data_in_the_window_is_absent(md: md_grpc.MarketDataServiceStub) -> None:
    assert consensus(md, ["QRY4-USD", "QRY5-USD"], END_MS + 6 * MINUTE_MS) == []
    assert consensus(md, ["QRY4-USD"], END_MS - 5 * MINUTE_MS + 1)[0][6] == ["sim"]


def test_consensus_defaults_to_now(md: md_grpc.MarketDataServiceStub, ingest: Ingest) -> None:
    now = int(time.time() * 1000)
    ingest(feed("QRY8-USD", "3", "kraken", now - 1_000), feed("QRY8-USD", "4", "binance", now - 2_000))
    before = int(time.time() * 1000)
    [price] = md.GetConsensus(md_pb.GetConsensusRequest(symbols=["QRY8-USD"]), timeout=5).prices
    assert (price.median, price.num_sources) == ("3.5", 2)
    assert before <= price.timestamp.ToMilliseconds() <= int(time.time() * 1000)


def test_consensus_refuses_too_many_symbols(md: md_grpc.MarketDataServiceStub) -> None:
    code, details = code_of(md.GetConsensus, md_pb.GetConsensusRequest(symbols=[f"Q{i}-USD" for i in range(101)]))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "at most 100 symbols" in details
