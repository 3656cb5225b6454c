"""Indicator storage: MACD-V state in Redis; warm-up closes and symbol ids from PostgreSQL.

One Redis string per (exchange, symbol, timeframe), ``RedisKeys.indicator_state``,
holds the serialized :class:`MacdVState`, which carries the value of the
series' last close with every internal: the update path is one ``GET`` and one
``SET`` per series (pipelined across the whole wave) and a read is one ``GET``.
An unreadable value (another version, garbage) counts as missing: the caller
rebuilds the series from the stored candles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal

import asyncpg

from common import resp
from core.adapters.postgres import STATEMENT_TIMEOUT_S, UNAVAILABLE_ERRORS
from core.adapters.redis_client import REDIS_DOWN_ERRORS, call, call_or_unavailable, first_error
from core.adapters.redis_keys import RedisKeys
from core.domain.errors import Unavailable
from core.domain.indicators import MacdVState, MacdVValue
from core.domain.timeframes import Timeframe
from core.services.indicators import SeriesKey, StoredClose

logger = logging.getLogger(__name__)


class IndicatorStore:
    """The Redis side: every series of a wave in one pipelined read and one pipelined write.

    The timeframes of one (exchange, symbol) share a hash tag, hence a cluster slot, so they are read
    with one ``MGET`` and written with one ``MSET``: a wave of 1,000 symbols x 6 timeframes is
    1,000 commands each way, not 6,000, sent in one call of the core's shared :class:`~common.resp.Pipeline`
    (replies parsed by hiredis: a third of redis-py's pipeline time per wave; on a Redis Cluster each
    command goes to the master owning its pair). A wave Redis cannot take raises
    ``StorageUnavailable("redis")``; the caller counts it and carries on.
    """

    def __init__(self, pipeline: resp.Pipeline, keys: RedisKeys) -> None:
        self._pipeline = pipeline
        self._keys = keys
        self._names: dict[SeriesKey, str] = {}  # key names, built once per series (bounded by the series served)
        # The last value read or written per series and its decoded state: a value equal to it byte for byte
        # needs no decoding (the single writer reads back what it wrote). Redis stays the source of truth.
        self._decoded_last: dict[SeriesKey, tuple[bytes, MacdVState]] = {}

    def _key(self, series: SeriesKey) -> str:
        name = self._names.get(series)
        if name is None:
            name = self._names[series] = self._keys.indicator_state(*series)
        return name

    def _by_pair(self, series: Sequence[SeriesKey]) -> list[tuple[list[int], list[str]]]:
        """Positions in ``series`` and key names, grouped by (exchange, symbol): one slot each."""
        groups: dict[tuple[str, str], tuple[list[int], list[str]]] = {}
        known = self._names
        for i, key in enumerate(series):
            name = known.get(key)
            if name is None:
                name = self._key(key)
            group = groups.get((key[0], key[1]))
            if group is None:
                groups[key[0], key[1]] = ([i], [name])
            else:
                group[0].append(i)
                group[1].append(name)
        return list(groups.values())

    async def load(self, series: Sequence[SeriesKey]) -> list[MacdVState | None]:
        if not series:
            return []
        groups = self._by_pair(series)
        replies = await call_or_unavailable(
            self._pipeline, [("MGET", *names) for _, names in groups], "indicator states not read"
        )
        states: list[MacdVState | None] = [None] * len(series)
        for (positions, _), blobs in zip(groups, replies, strict=True):
            for i, blob in zip(positions, blobs, strict=True):
                states[i] = self._decoded(series[i], blob)
        return states

    async def save(self, items: Sequence[tuple[SeriesKey, MacdVState]]) -> None:
        if not items:
            return
        groups = self._by_pair([key for key, _ in items])
        blobs = [state.to_bytes() for _, state in items]
        commands: list[resp.Command] = []
        for positions, names in groups:
            command: list[str | bytes] = ["MSET"]
            for i, name in zip(positions, names, strict=True):
                command += (name, blobs[i])
            commands.append(tuple(command))
        await call_or_unavailable(self._pipeline, commands, "indicator states not written")
        for (key, state), blob in zip(items, blobs, strict=True):
            self._decoded_last[key] = (blob, state)

    async def latest(self, series: SeriesKey) -> MacdVValue | None:
        """The value of the series' last close (read path; Redis down is Unavailable)."""
        try:
            replies = await call(self._pipeline, ("GET", self._key(series)))
        except REDIS_DOWN_ERRORS as exc:
            raise Unavailable("Redis is unavailable; indicator not read") from exc
        if first_error(replies) is not None:
            raise Unavailable(f"Redis is unavailable; indicator not read ({replies[0]})")
        state = self._decoded(series, replies[0])
        return state.last if state is not None else None

    def _decoded(self, series: SeriesKey, blob: bytes | None) -> MacdVState | None:
        if blob is None:
            return None
        known = self._decoded_last.get(series)
        if known is not None and known[0] == blob:
            return known[1]
        try:
            state = MacdVState.from_bytes(blob)
        except ValueError as exc:
            logger.warning("indicator state of %s unreadable, treated as missing: %s", series, exc)
            return None
        self._decoded_last[series] = (blob, state)
        return state


# The newest ``limit`` closed candles before a bound, per requested series, oldest first.
_BARS = """
SELECT k.i, (extract(epoch FROM c.open_time) * 1000)::bigint AS open_ms, c.high::text, c.low::text, c.close::text
FROM unnest($2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS k(symbol, timeframe, before_ms, i)
CROSS JOIN LATERAL (
    SELECT open_time, high, low, close FROM candles
    WHERE exchange_id = $1 AND symbol = k.symbol AND timeframe = k.timeframe
      AND open_time < timestamptz 'epoch' + k.before_ms * interval '1 millisecond'
    ORDER BY open_time DESC LIMIT $5
) c
ORDER BY k.i, c.open_time
"""


class CandleHistory:
    """The PostgreSQL side: stored candles to warm up from, and symbol ids for the read path."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def closes_before(
        self, exchange_id: int, wanted: Sequence[tuple[str, Timeframe, int]], limit: int
    ) -> list[list[StoredClose]]:
        """For each ``(symbol, timeframe, before_ms)``: its last ``limit`` stored closes before ``before_ms``."""
        found: list[list[StoredClose]] = [[] for _ in wanted]
        if not wanted:
            return found
        symbols, timeframes, bounds = zip(*((s, tf.value, before) for s, tf, before in wanted), strict=True)
        try:
            rows = await self._pool.fetch(
                _BARS, exchange_id, list(symbols), list(timeframes), list(bounds), limit, timeout=STATEMENT_TIMEOUT_S
            )
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; candles not read") from exc
        for i, open_ms, high, low, close in rows:
            price = Decimal(close)
            found[i - 1].append(StoredClose(open_ms, float(Decimal(high)), float(Decimal(low)), float(price), price))
        return found

    async def symbol_id(self, exchange_id: int, symbol: str) -> int | None:
        try:
            value = await self._pool.fetchval(
                "SELECT id FROM symbols WHERE exchange_id = $1 AND symbol = $2",
                exchange_id,
                symbol,
                timeout=STATEMENT_TIMEOUT_S,
            )
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; symbol not read") from exc
        return int(value) if value is not None else None
