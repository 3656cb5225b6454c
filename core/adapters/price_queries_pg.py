"""Price reads from PostgreSQL's ``price_feeds``: latest tick per symbol, OHLCV buckets, latest per source.

Every statement is bounded (pool acquisition and execution), works on exact
NUMERIC values (asyncpg hands them over as Decimal, every digit kept) and is
shaped to walk the two indexes of ``price_feeds``:

* ``price_feeds_symbol_ts_idx (symbol, ts DESC)``: latest per symbol (one
  LATERAL ``LIMIT 1`` per symbol instead of ``DISTINCT ON``, which would read
  every row of each symbol), unfiltered ranges and the bucket edge look-ups;
* ``price_feeds_symbol_source_ts_key (symbol, source, ts DESC, …)``: ranges
  filtered by source and the consensus window (one ``LIMIT 1`` probe per
  symbol and source; the sources are the exchanges' names, the only
  sources ingestion accepts).

Buckets are ``date_bin`` (PostgreSQL 14 or later) from the Unix epoch, so they
fall on the same UTC boundaries as candles. High, low, volume and the count are
one aggregate pass; open and close are then read by index at each bucket's
first and last timestamp (ties: the lowest id opens, the highest id closes),
so no bucket's ticks are ever collected into an array.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from core.adapters.postgres import STATEMENT_TIMEOUT_S, UNAVAILABLE_ERRORS, ms_to_datetime
from core.adapters.price_cache import LatestPrice
from core.adapters.read_replica import ReadSource
from core.domain.errors import Unavailable
from core.domain.timeframes import Timeframe
from core.services.price_queries import PriceBucket, RangeQuery

logger = logging.getLogger(__name__)

POOL_ACQUIRE_TIMEOUT_S = 2.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

# Ties on ts go to the source whose name sorts first, as in the cache path.
_LATEST = """
SELECT s.symbol, p.source, p.price, p.volume, p.ts
FROM unnest($1::text[]) AS s(symbol)
CROSS JOIN LATERAL (
    SELECT f.source, f.price, f.volume, f.ts FROM price_feeds f
    WHERE f.symbol = s.symbol
    ORDER BY f.ts DESC, f.source, f.id DESC
    LIMIT 1
) AS p
"""

_BUCKETS = """
WITH b AS (
    SELECT date_bin($4::interval, ts, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket,
           min(ts) AS first_ts, max(ts) AS last_ts, max(price) AS high, min(price) AS low,
           sum(volume) AS volume, count(*) AS num_feeds
    FROM price_feeds
    WHERE symbol = $1 AND ts >= $2 AND ts < $3{source}
    GROUP BY 1
    ORDER BY 1
    LIMIT $5
)
SELECT b.bucket, o.price AS open, b.high, b.low, c.price AS close, b.volume, b.num_feeds
FROM b
CROSS JOIN LATERAL (
    SELECT price FROM price_feeds WHERE symbol = $1 AND ts = b.first_ts{source} ORDER BY id LIMIT 1
) AS o
CROSS JOIN LATERAL (
    SELECT price FROM price_feeds WHERE symbol = $1 AND ts = b.last_ts{source} ORDER BY id DESC LIMIT 1
) AS c
ORDER BY b.bucket
"""
# Two statements rather than "$6 IS NULL OR source = $6": a generic plan could not use the source index.
_BUCKETS_ALL_SOURCES = _BUCKETS.format(source="")
_BUCKETS_ONE_SOURCE = _BUCKETS.format(source=" AND source = $6")

# One index probe per (symbol, source) instead of DISTINCT ON over the window, which sorts every tick of
# it (a chatty venue sends many per second). The sources come as a parameter, not a join with `exchanges`:
# that table is too small for autovacuum to ever analyze, and its default estimate made plans costly
# enough to be JIT-compiled (+100 ms).
_LATEST_PER_SOURCE = """
SELECT s.symbol, p.source, p.price, p.volume, p.ts
FROM unnest($1::text[]) AS s(symbol)
CROSS JOIN unnest($4::text[]) AS e(source)
CROSS JOIN LATERAL (
    SELECT f.source, f.price, f.volume, f.ts FROM price_feeds f
    WHERE f.symbol = s.symbol AND f.source = e.source AND f.ts > $2 AND f.ts <= $3
    ORDER BY f.ts DESC, f.id DESC
    LIMIT 1
) AS p
"""


def datetime_to_ms(value: datetime) -> int:
    """Exact epoch milliseconds (no float on the way)."""
    return (value - _EPOCH) // _ONE_MS


def bucket_interval(timeframe: Timeframe) -> timedelta:
    return timedelta(milliseconds=timeframe.ms)


def _latest_price(row: asyncpg.Record) -> LatestPrice:
    return LatestPrice(row["symbol"], row["source"], row["price"], row["volume"], datetime_to_ms(row["ts"]))


class PgPriceHistory:
    def __init__(self, pool: ReadSource, *, sources: Iterable[str]) -> None:
        """``sources``: every source a tick can have (the exchange names ingestion accepts); ``pool``: the
        primary's, or a :class:`~core.adapters.read_replica.ReadPool` (these reads may be a little stale)."""
        self._pool = pool
        self._sources = sorted(sources)

    async def latest(self, symbols: Sequence[str]) -> list[LatestPrice]:
        """The freshest tick of each symbol that has any; symbols without ticks are absent."""
        rows = await self._fetch(_LATEST, list(symbols))
        return [_latest_price(row) for row in rows]

    async def buckets(self, query: RangeQuery) -> list[PriceBucket]:
        args: list[object] = [
            query.symbol,
            ms_to_datetime(query.start_ms),
            ms_to_datetime(query.end_ms),
            bucket_interval(query.interval),
            query.limit,
        ]
        if query.source is None:
            rows = await self._fetch(_BUCKETS_ALL_SOURCES, *args)
        else:
            rows = await self._fetch(_BUCKETS_ONE_SOURCE, *args, query.source)
        return [
            PriceBucket(
                open_ms=datetime_to_ms(row["bucket"]),
                open=row["open"],
                high=row["high"],
                low=row["low"],
                close=row["close"],
                volume=row["volume"],
                num_feeds=row["num_feeds"],
            )
            for row in rows
        ]

    async def latest_per_source(self, symbols: Sequence[str], *, after_ms: int, until_ms: int) -> list[LatestPrice]:
        """Each source's newest tick per symbol with ``after_ms < ts <= until_ms``."""
        rows = await self._fetch(
            _LATEST_PER_SOURCE, list(symbols), ms_to_datetime(after_ms), ms_to_datetime(until_ms), self._sources
        )
        return [_latest_price(row) for row in rows]

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        try:
            async with self._pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S) as conn:
                rows: list[asyncpg.Record] = await conn.fetch(query, *args, timeout=STATEMENT_TIMEOUT_S)
        except UNAVAILABLE_ERRORS as exc:
            logger.warning("price read failed: %r", exc)
            raise Unavailable("PostgreSQL is unavailable or did not answer in time; retry") from exc
        return rows
