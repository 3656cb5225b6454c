"""Price feeds (ticks) in PostgreSQL: one statement per batch, idempotent, committed before any ack."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg

from core.adapters.postgres import STATEMENT_TIMEOUT_S, UNAVAILABLE_ERRORS, Connection
from core.adapters.tick_partitions import DEFAULT_PARTITION
from core.domain.errors import Unavailable
from core.domain.prices import Tick, decimal_str

logger = logging.getLogger(__name__)

# A retried batch (or the same tick from two workers) hits the unique identity
# (symbol, source, ts, price, volume, trade_id) and is not stored again; two trades alike in all but their
# venue's trade id are two ticks.
#
# A tick of a source in $14 (ingested ticks of an exchange whose candles come from trades) is also put in
# candle_inbox in the same statement, so it is there exactly when it is stored: the writer leading that
# exchange, on whichever core, takes it from there into its candles (docs/design/ingestion.md).
# Numbers travel as their decimal text and times as epoch milliseconds: both convert exactly in
# PostgreSQL, and encoding text and integers costs the core far less than Decimal and datetime.
#
# Each stored row says which partition took it (a text comparison, not a regclass constant, so a prepared
# statement stays right if the partition is ever recreated): one in the DEFAULT partition arrived for a day
# that has no partition yet (a clock jump, an old backfill). It is stored all the same, and counted.
#
# $12 is the caller's deadline (epoch ms, or NULL for none), checked by PostgreSQL itself when the statement
# runs, after any lock wait: a statement that reaches a stalled or frozen server and runs once it is back,
# past the deadline, stores nothing (in_time false) instead of committing a batch its caller gave up on.
_INSERT = (
    """
WITH live AS MATERIALIZED (
    SELECT $12::bigint IS NULL OR clock_timestamp() < {ms}($12::bigint) AS in_time
), stored AS (
INSERT INTO price_feeds (symbol, price, volume, source, ts, bid, ask, exchange_ts, worker_id, batch_id, index_in_batch,
                         trade_id)
SELECT f.symbol, f.price::numeric, f.volume::numeric, f.source, {ms}(f.ts), f.bid::numeric, f.ask::numeric,
       {ms}(f.exchange_ts), $9, $10, f.idx, f.trade_id
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::bigint[],
            $11::int[], $13::text[])
     AS f(symbol, price, volume, source, ts, bid, ask, exchange_ts, idx, trade_id)
WHERE (SELECT in_time FROM live)
ON CONFLICT (symbol, source, ts, price, volume, trade_id) DO NOTHING
RETURNING id, symbol, price, volume, source, ts, index_in_batch, tableoid::regclass::text = '{default}' AS unplaced
), inbox AS (
INSERT INTO candle_inbox (source, symbol, price, volume, ts, tick_id)
SELECT source, symbol, price, volume, ts, id FROM stored WHERE source = ANY($14::text[])
)
SELECT (SELECT in_time FROM live) AS in_time, ARRAY(SELECT index_in_batch FROM stored) AS indexes,
       (SELECT count(*) FROM stored WHERE unplaced) AS unplaced
""".replace("{ms}(f.ts)", "(timestamptz 'epoch' + f.ts * interval '1 millisecond')")
    .replace("{ms}(f.exchange_ts)", "(timestamptz 'epoch' + f.exchange_ts * interval '1 millisecond')")
    .replace("{ms}($12::bigint)", "(timestamptz 'epoch' + $12::bigint * interval '1 millisecond')")
    .replace("{default}", DEFAULT_PARTITION)
)


class TickStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # ticks stored in the DEFAULT partition since start (perseus_ticks_unpartitioned_total)
        self.unplaced = 0

    async def insert(
        self,
        ticks: Sequence[tuple[int, Tick]],
        *,
        worker_id: str,
        batch_id: str,
        conn: Connection | None = None,
        deadline_ms: int | None = None,
        to_candles: frozenset[str] = frozenset(),
    ) -> set[int]:
        """Store ``(index, tick)`` pairs in one statement; returns the indexes newly stored.

        With ``conn`` the statement joins that connection's transaction (a
        fenced writer's); otherwise it commits on its own.

        ``deadline_ms`` (epoch milliseconds) is the caller's deadline: the
        statement is bounded by it (asyncpg cancels it then), and PostgreSQL
        stores nothing if it only gets to run the statement after it (see
        ``_INSERT``), so a batch whose caller gave up is not committed later.

        Raises :class:`Unavailable` when PostgreSQL cannot be used or the
        deadline passed first: then nothing of the batch was acknowledged, and
        a retry stores each tick once.

        The newly stored ticks whose source is in ``to_candles`` are also queued, in the same statement,
        for the candles of that source's writer (``candle_inbox``).
        """
        if not ticks:
            return set()
        timeout_s = STATEMENT_TIMEOUT_S
        if deadline_ms is not None:
            timeout_s = min(timeout_s, (deadline_ms - time.time_ns() // 1_000_000) / 1000)
            if timeout_s <= 0:
                raise Unavailable("the call's deadline passed before the batch was stored; nothing was stored")
        columns: list[list[object]] = [[] for _ in range(10)]
        for index, tick in ticks:
            values = (
                tick.symbol,
                decimal_str(tick.price),
                decimal_str(tick.volume),
                tick.source,
                tick.ts_ms,
                None if tick.bid is None else decimal_str(tick.bid),
                None if tick.ask is None else decimal_str(tick.ask),
                tick.exchange_ts_ms or None,
                index,
                tick.trade_id,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        try:
            row = await (conn or self._pool).fetchrow(
                _INSERT,
                *columns[:8],
                worker_id,
                batch_id or None,
                columns[8],
                deadline_ms,
                columns[9],
                sorted(to_candles),
                timeout=timeout_s,
            )
        except UNAVAILABLE_ERRORS as exc:
            logger.warning("price feeds not stored: %s", exc)
            raise Unavailable("PostgreSQL is unavailable; nothing of this batch was stored, retry it") from exc
        except asyncio.CancelledError:
            raise
        assert row is not None, "a SELECT of two expressions returns one row"
        if not row["in_time"]:
            logger.warning("price feeds not stored: PostgreSQL ran the insert after the caller's deadline")
            raise Unavailable("the call's deadline passed before the batch was stored; nothing was stored")
        if row["unplaced"]:
            self.unplaced += row["unplaced"]
            logger.warning(
                "ticks stored in the default partition: their day has no partition yet (clock jump?)",
                extra={"fields": {"ticks": row["unplaced"], "batch_id": batch_id}},
            )
        return set(row["indexes"])
