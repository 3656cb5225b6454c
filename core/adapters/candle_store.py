"""Closed candles: PostgreSQL for the full history, a bounded Redis window per (exchange, symbol, timeframe).

Closed candles are final, so the first write of a candle wins in both
places: PostgreSQL ignores a conflicting row, and the window replaces any
member at the same open time (the only way that happens is a rebuild of the
very same candle).

The windows are written through the core's shared :class:`~common.resp.Pipeline` (one script call per
window, each to the master owning the window on a Redis Cluster); they are read with redis-py
(:data:`~core.adapters.redis_client.RedisClient`), one command or script call at a time, which routes
alike on one server and on a cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import TypeVar

import asyncpg

from common import resp
from core.adapters.postgres import STATEMENT_TIMEOUT_S, UNAVAILABLE_ERRORS, Connection, ms_to_datetime
from core.adapters.read_replica import ReadSource
from core.adapters.redis_client import REDIS_DOWN_ERRORS, RedisClient, call_or_unavailable, reply_scored
from core.adapters.redis_keys import RedisKeys
from core.codec.messages import candle_to_pb
from core.domain.candles import Aggregate, Candle
from core.domain.errors import StorageUnavailable, Unavailable
from core.domain.symbols import split_symbol
from core.domain.timeframes import TIMEFRAMES, Timeframe
from core.services.candle_queries import CandleQuery, Span

logger = logging.getLogger(__name__)

WINDOW_SIZE = 1_000
# A window read that takes longer is given up and the read goes to PostgreSQL (a frozen Redis: the connection
# is up, no reply comes); after a failed window read, reads skip the window this long (no 0.5 s toll each).
WINDOW_READ_TIMEOUT_S = 0.5
WINDOW_SKIP_S = 1.0
T = TypeVar("T")

# KEYS[1] window. ARGV: max size, then (open_time, member) pairs.
_WINDOW_ADD = """
for i = 2, #ARGV, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i])
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[1]) - 1)
return redis.call('ZCARD', KEYS[1])
"""

_INSERT = """
INSERT INTO candles (exchange_id, symbol, timeframe, open_time, open, high, low, close, volume, is_synthetic,
                     sequence_num)
SELECT $1, c.symbol, c.timeframe, c.open_time, c.open, c.high, c.low, c.close, c.volume, c.synthetic, c.seq
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::numeric[], $6::numeric[], $7::numeric[],
            $8::numeric[], $9::numeric[], $10::bool[], $11::bigint[])
     AS c(symbol, timeframe, open_time, open, high, low, close, volume, synthetic, seq)
ON CONFLICT (exchange_id, symbol, timeframe, open_time) DO NOTHING
"""

# One backward primary-key probe per timeframe (a DISTINCT ON over the symbol would read all its candles).
_LAST = """
SELECT tf AS timeframe, c.open_time, c.close
FROM unnest($3::text[]) AS tf
CROSS JOIN LATERAL (
    SELECT open_time, close FROM candles
    WHERE exchange_id = $1 AND symbol = $2 AND timeframe = tf
    ORDER BY open_time DESC LIMIT 1
) AS c
"""

_MS = "(extract(epoch FROM {}) * 1000)::bigint"

# The stored, not synthetic, 1m candles from $3 on (and before $4 unless NULL): a primary-key range.
_STORED_MINUTES = f"""
SELECT {_MS.format("open_time")} AS first_ms, {_MS.format("open_time")} AS last_ms, open, high, low, close, volume
FROM candles
WHERE exchange_id = $1 AND symbol = $2 AND timeframe = '1m' AND open_time >= $3
  AND ($4::timestamptz IS NULL OR open_time < $4) AND NOT is_synthetic
ORDER BY open_time
"""

# The stored ticks of one source and symbol from $3 on, aggregated per UTC minute: a range of the
# (symbol, source, ts) index. Open and close are the prices of the first and last tick by timestamp,
# ties broken by insertion order (id), the order in which the writer's builder saw them. Ingested ticks still
# in candle_inbox are left out: the writer takes them from there right after (one snapshot decides which side
# each tick is on, so none counts twice and none is missed).
NOT_WAITING = "AND NOT EXISTS (SELECT 1 FROM candle_inbox AS i WHERE i.tick_id = p.id)"
_TICK_MINUTES = f"""
SELECT {_MS.format("min(ts)")} AS first_ms, {_MS.format("max(ts)")} AS last_ms,
       (array_agg(price ORDER BY ts, id))[1] AS open, max(price) AS high, min(price) AS low,
       (array_agg(price ORDER BY ts DESC, id DESC))[1] AS close, sum(volume) AS volume
FROM price_feeds AS p
WHERE symbol = $1 AND source = $2 AND ts >= $3
  {NOT_WAITING}
GROUP BY date_bin('1 minute', ts, timestamptz 'epoch')
ORDER BY date_bin('1 minute', ts, timestamptz 'epoch')
"""

# The ingested ticks waiting for the candles of the given symbols, taken (deleted) in the writer's fenced
# transaction, oldest first (ties in insertion order).
_TAKE_INBOX = f"""
WITH taken AS (
    DELETE FROM candle_inbox WHERE source = $1 AND symbol = ANY($2::text[])
    RETURNING symbol, price, volume, ts, tick_id
)
SELECT symbol, price, volume, {_MS.format("ts")} AS ts_ms FROM taken ORDER BY ts, tick_id
"""

# Rebuilding reads more than one statement usually does (the minutes of an outage); it runs once per takeover.
RESTORE_TIMEOUT_S = 60.0


# KEYS[1]: a window. ARGV: max score, min score, limit. The window's oldest score, then the newest
# ``limit`` members between the scores, newest first.
_NEWEST_IN_WINDOW = """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {first[2] or false, redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYSCORE', 'REV', 'LIMIT', 0, ARGV[3])}
"""


class CandleStore:
    def __init__(
        self, pool: asyncpg.Pool, pipeline: resp.Pipeline, keys: RedisKeys, *, window_size: int = WINDOW_SIZE
    ) -> None:
        self._pool = pool
        self._pipeline = pipeline
        self._keys = keys
        self._window_size = window_size
        self._window_add = pipeline.register_script(_WINDOW_ADD)

    async def insert(self, exchange_id: int, candles: Sequence[Candle], *, conn: Connection | None = None) -> None:
        """The full history in PostgreSQL (raises Unavailable); ``conn``: within that transaction."""
        if not candles:
            return
        columns = list(
            zip(
                *(
                    (
                        c.symbol,
                        c.timeframe.value,
                        ms_to_datetime(c.open_time),
                        c.open,
                        c.high,
                        c.low,
                        c.close,
                        c.volume,
                        c.is_synthetic,
                        c.sequence_num,
                    )
                    for c in candles
                ),
                strict=True,
            )
        )
        try:
            await (conn or self._pool).execute(_INSERT, exchange_id, *map(list, columns), timeout=STATEMENT_TIMEOUT_S)
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; candles not stored") from exc

    async def add_to_windows(self, exchange_id: int, candles: Sequence[Candle]) -> None:
        """The bounded recent windows in Redis (raises ``StorageUnavailable("redis")``)."""
        by_window: dict[str, list[int | bytes]] = {}
        for c in candles:
            key = self._keys.candle_window(c.exchange, c.symbol, c.timeframe)
            member = candle_to_pb(c, exchange_id=exchange_id).SerializeToString()
            by_window.setdefault(key, []).extend((c.open_time, member))
        if not by_window:
            return
        commands = [
            ("EVALSHA", self._window_add, 1, key, self._window_size, *pairs) for key, pairs in by_window.items()
        ]
        await call_or_unavailable(self._pipeline, commands, "candle windows not written")

    async def register_symbols(
        self, exchange_id: int, symbols: Sequence[str], *, conn: Connection | None = None
    ) -> None:
        """Record the symbols an exchange's feed carries (idempotent), for ListSymbols."""
        pairs = [split_symbol(symbol) for symbol in symbols]
        try:
            await (conn or self._pool).execute(
                "INSERT INTO symbols (exchange_id, symbol, base, quote)"
                " SELECT $1, s.base || '-' || s.quote, s.base, s.quote"
                " FROM unnest($2::text[], $3::text[]) AS s(base, quote)"
                " ON CONFLICT (exchange_id, symbol) DO NOTHING",
                exchange_id,
                [base for base, _ in pairs],
                [quote for _, quote in pairs],
                timeout=STATEMENT_TIMEOUT_S,
            )
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; symbols not registered") from exc

    async def last_closed(self, exchange_id: int, symbol: str) -> dict[Timeframe, tuple[int, Decimal]]:
        """Open time (ms) and close of the newest stored candle per timeframe, to resume building."""
        timeframes = [tf.value for tf in TIMEFRAMES]
        try:
            rows = await self._pool.fetch(_LAST, exchange_id, symbol, timeframes, timeout=STATEMENT_TIMEOUT_S)
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; the last candles cannot be read") from exc
        found = {row["timeframe"]: (int(row["open_time"].timestamp() * 1000), row["close"]) for row in rows}
        return {tf: found[tf.value] for tf in TIMEFRAMES if tf.value in found}

    async def stored_minutes(
        self, exchange_id: int, symbol: str, since_ms: int, until_ms: int | None = None
    ) -> list[Aggregate]:
        """The stored 1m candles with data (not synthetic) from ``since_ms`` (to ``until_ms``), oldest first:
        what the higher timeframes' candles in progress hold of the minutes already closed."""
        until = None if until_ms is None else ms_to_datetime(until_ms)
        return await self._aggregates(_STORED_MINUTES, exchange_id, symbol, ms_to_datetime(since_ms), until)

    async def tick_minutes(self, source: str, symbol: str, since_ms: int) -> list[Aggregate]:
        """The stored ticks of ``source`` and ``symbol`` from ``since_ms`` on, one aggregate per minute, oldest
        first: what the candles of the minutes after the stored 1m candles hold."""
        return await self._aggregates(_TICK_MINUTES, symbol, source, ms_to_datetime(since_ms))

    async def inbox_symbols(self, source: str) -> set[str]:
        """The symbols that have ingested ticks of ``source`` waiting for their candles."""
        try:
            rows = await self._pool.fetch(
                "SELECT DISTINCT symbol FROM candle_inbox WHERE source = $1", source, timeout=STATEMENT_TIMEOUT_S
            )
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; the ingested ticks cannot be read") from exc
        return {row["symbol"] for row in rows}

    async def take_inbox(
        self, source: str, symbols: Sequence[str], *, conn: Connection | None = None
    ) -> list[tuple[str, Decimal, Decimal, int]]:
        """Take the ingested ticks of ``source`` waiting for the candles of ``symbols``: ``(symbol, price,
        volume, ts_ms)``, oldest first, deleted within ``conn``'s transaction (the writer's fenced one)."""
        if not symbols:
            return []
        try:
            rows = await (conn or self._pool).fetch(_TAKE_INBOX, source, list(symbols), timeout=STATEMENT_TIMEOUT_S)
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; the ingested ticks cannot be taken") from exc
        return [(row["symbol"], row["price"], row["volume"], row["ts_ms"]) for row in rows]

    async def _aggregates(self, query: str, *args: object) -> list[Aggregate]:
        try:
            rows = await self._pool.fetch(query, *args, timeout=RESTORE_TIMEOUT_S)
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; candles in progress cannot be rebuilt") from exc
        return [Aggregate(*row) for row in rows]


class CandleRowsReader:
    """Reads for :mod:`core.services.candle_queries`: the Redis window and the PostgreSQL history.

    Driver errors never leave here: a window read that Redis refuses, drops or does not answer within
    :data:`WINDOW_READ_TIMEOUT_S` raises ``StorageUnavailable("redis")`` (and the next reads within
    :data:`WINDOW_SKIP_S` raise it at once, without trying), a history read that PostgreSQL cannot serve
    ``StorageUnavailable("postgresql")``. The service answers the first from PostgreSQL alone.
    """

    def __init__(
        self,
        pool: ReadSource,  # candle history may come from the read replica
        redis: RedisClient,
        keys: RedisKeys,
        exchange_ids: Mapping[str, int],
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._exchange_ids = exchange_ids
        self._newest = redis.register_script(_NEWEST_IN_WINDOW)
        self._clock = clock
        self._skip_window_until = 0.0

    async def _from_window(self, read: Callable[[], Awaitable[T]]) -> T:
        if self._clock() < self._skip_window_until:
            raise StorageUnavailable("redis", "Redis did not answer a moment ago; the candle window is skipped")
        try:
            async with asyncio.timeout(WINDOW_READ_TIMEOUT_S):
                return await read()
        except REDIS_DOWN_ERRORS as exc:
            self._skip_window_until = self._clock() + WINDOW_SKIP_S
            logger.warning("candle window unreadable (%s); candles are read from PostgreSQL", type(exc).__name__)
            raise StorageUnavailable("redis", f"the candle window cannot be read ({type(exc).__name__})") from exc

    def _window_key(self, query: CandleQuery) -> str:
        return self._keys.candle_window(query.exchange, query.symbol, query.timeframe)

    async def window_oldest(self, query: CandleQuery) -> int | None:
        first = await self._from_window(lambda: self._redis.zrange(self._window_key(query), 0, 0, withscores=True))
        return int(first[0][1]) if first else None

    async def window(self, query: CandleQuery, span: Span) -> list[tuple[int, bytes]]:
        return await self._from_window(lambda: self._read_window(query, span))

    async def _read_window(self, query: CandleQuery, span: Span) -> list[tuple[int, bytes]]:
        low = "-inf" if span.start_ms is None else span.start_ms
        high = "+inf" if span.end_ms is None else f"({span.end_ms}"
        key = self._window_key(query)
        if span.newest:
            rows = await self._redis.zrevrangebyscore(key, high, low, start=0, num=span.limit, withscores=True)
            rows.reverse()
        else:
            rows = await self._redis.zrangebyscore(key, low, high, start=0, num=span.limit, withscores=True)
        return [(int(score), member) for member, score in reply_scored(rows)]

    async def newest_in_window(self, query: CandleQuery, span: Span) -> tuple[int | None, list[bytes]]:
        """The window's oldest open time and its newest ``span.limit`` candles in ``span`` (oldest first),
        in one script call: one round trip, and both reads see the same window."""
        high = "+inf" if span.end_ms is None else f"({span.end_ms}"
        low = "-inf" if span.start_ms is None else span.start_ms
        oldest, members = await self._from_window(
            lambda: self._newest(keys=[self._window_key(query)], args=[high, low, span.limit])
        )
        members.reverse()
        return (int(oldest) if oldest is not None else None), members

    async def history(self, query: CandleQuery, span: Span) -> list[tuple[int, bytes]]:
        order = "DESC" if span.newest else "ASC"
        try:
            rows = await self._history_rows(query, span, order)
        except UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable("postgresql", "PostgreSQL is unavailable; candles cannot be read") from exc
        found = [(int(row["open_time"].timestamp() * 1000), self._encode(query, row)) for row in rows]
        return found[::-1] if span.newest else found

    async def _history_rows(self, query: CandleQuery, span: Span, order: str) -> list[asyncpg.Record]:
        return await self._pool.fetch(
            "SELECT open_time, open::text, high::text, low::text, close::text, volume::text, is_synthetic, sequence_num"
            " FROM candles WHERE exchange_id = $1 AND symbol = $2 AND timeframe = $3"
            " AND ($4::timestamptz IS NULL OR open_time >= $4) AND ($5::timestamptz IS NULL OR open_time < $5)"
            f" ORDER BY open_time {order} LIMIT $6",
            self._exchange_ids[query.exchange],
            query.symbol,
            query.timeframe.value,
            None if span.start_ms is None else ms_to_datetime(span.start_ms),
            None if span.end_ms is None else ms_to_datetime(span.end_ms),
            span.limit,
            timeout=STATEMENT_TIMEOUT_S,
        )

    def _encode(self, query: CandleQuery, row: asyncpg.Record) -> bytes:
        candle = Candle(
            query.exchange,
            query.symbol,
            query.timeframe,
            int(row["open_time"].timestamp() * 1000),
            Decimal(row["open"]),
            Decimal(row["high"]),
            Decimal(row["low"]),
            Decimal(row["close"]),
            Decimal(row["volume"]),
            is_synthetic=row["is_synthetic"],
        )
        return candle_to_pb(candle, exchange_id=self._exchange_ids[query.exchange]).SerializeToString()
