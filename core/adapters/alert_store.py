"""Alerts in PostgreSQL (one row per crossing); their ``TradeSignal`` events are published by
:class:`core.adapters.events.EventPublisher`.

The insert is one statement per wave, ``ON CONFLICT ON CONSTRAINT
alerts_crossing_key DO NOTHING RETURNING``: only rows this statement stored
come back, so only they are published. Each is stored with its
row in ``alert_outbox`` (``0004_alert_outbox.sql``), deleted once its event is
in Redis, and with one ``webhook_deliveries`` row per matching webhook endpoint
(``0008_webhooks.sql``: the webhooks' outbox, in the same statement). Reads serve the newest alert of a
series and the history, newest first, keyset-paginated on
``(triggered_at, id)`` (the ``alerts_history_idx`` / ``alerts_triggered_at_idx``
indexes).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg

from core.adapters.postgres import STATEMENT_TIMEOUT_S, UNAVAILABLE_ERRORS, Connection
from core.adapters.read_replica import ReadSource
from core.adapters.webhook_store import OUTBOX_CTE
from core.domain.errors import Unavailable
from core.domain.prices import decimal_str
from core.domain.signals import Direction, Strength
from core.domain.timeframes import Timeframe
from core.services.indicator_queries import AlertQuery
from core.services.indicators import AlertRecord, NewAlert

_MS = "timestamptz 'epoch' + {} * interval '1 millisecond'"
_COLUMNS = (
    "a.id, a.exchange_id, e.name AS exchange, a.symbol, a.timeframe, a.alert_type, a.signal_type, a.direction,"
    " a.strength, a.trigger_value, a.signal_delta, a.trigger_label, a.price::text AS price,"
    " (extract(epoch FROM a.triggered_at) * 1000)::bigint AS triggered_ms"
)

_INSERT = f"""
WITH stored AS (
    INSERT INTO alerts (exchange_id, symbol, timeframe, alert_type, signal_type, direction, strength, trigger_value,
                        signal_delta, trigger_label, price, triggered_at)
    SELECT n.exchange_id, n.symbol, n.timeframe, n.alert_type, n.signal_type, n.direction, n.strength,
           n.trigger_value, n.signal_delta, n.trigger_label, n.price::numeric, {_MS.format("n.triggered_ms")}
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::float8[], $9::float8[], $10::text[], $11::text[], $12::bigint[])
         AS n(exchange_id, symbol, timeframe, alert_type, signal_type, direction, strength, trigger_value,
              signal_delta, trigger_label, price, triggered_ms)
    ON CONFLICT ON CONSTRAINT alerts_crossing_key DO NOTHING
    RETURNING *
), outbox AS (
    INSERT INTO alert_outbox (alert_id) SELECT id FROM stored
), {OUTBOX_CTE.strip()}
SELECT {_COLUMNS} FROM stored a JOIN exchanges e ON e.id = a.exchange_id ORDER BY a.id
"""

_SELECT = f"SELECT {_COLUMNS} FROM alerts a JOIN exchanges e ON e.id = a.exchange_id"
_LATEST = (
    f"{_SELECT} WHERE a.exchange_id = $1 AND a.symbol = $2 AND a.timeframe = $3"
    " ORDER BY a.triggered_at DESC, a.id DESC LIMIT 1"
)
_UNPUBLISHED = f"{_SELECT} JOIN alert_outbox o ON o.alert_id = a.id ORDER BY a.id LIMIT $1"
_PUBLISHED = "DELETE FROM alert_outbox WHERE alert_id = ANY($1::bigint[])"
_BY_ID = f"{_SELECT} WHERE a.id = ANY($1::bigint[]) ORDER BY a.id"
# the alerts of one exchange, symbol and timeframe triggered in [$4, $5), oldest first: ReplayService's read
RANGE_SQL = (
    f"{_SELECT} WHERE a.exchange_id = $1 AND a.symbol = $2 AND a.timeframe = $3"
    " AND a.triggered_at >= $4 AND a.triggered_at < $5 ORDER BY a.triggered_at, a.id"
)


class AlertStore:
    def __init__(self, pool: asyncpg.Pool, *, history: ReadSource | None = None) -> None:
        """``history``: where :meth:`page` reads (the read replica may serve alert history); else ``pool``."""
        self._pool = pool
        self._history = history if history is not None else pool

    async def insert(self, alerts: Sequence[NewAlert], *, conn: Connection | None = None) -> list[AlertRecord]:
        """Store ``alerts``; returns the ones that were not stored before (``conn``: within that transaction)."""
        if not alerts:
            return []
        columns = list(
            zip(
                *(
                    (
                        n.exchange_id,
                        n.symbol,
                        n.timeframe.value,
                        n.alert.alert_type,
                        n.alert.signal_type,
                        n.alert.direction.value,
                        n.alert.strength.value,
                        n.alert.trigger_value,
                        n.alert.signal_delta,
                        n.alert.trigger_label,
                        decimal_str(n.price),
                        n.triggered_ms,
                    )
                    for n in alerts
                ),
                strict=True,
            )
        )
        rows = await self._fetch(_INSERT, *map(list, columns), conn=conn)
        return [alert_record(row) for row in rows]

    async def latest(self, exchange_id: int, symbol: str, timeframe: Timeframe) -> AlertRecord | None:
        rows = await self._fetch(_LATEST, exchange_id, symbol, timeframe.value)
        return alert_record(rows[0]) if rows else None

    async def by_id(self, ids: Sequence[int]) -> list[AlertRecord]:
        """The alerts of ``ids`` that exist, in id order (the webhook worker's bodies)."""
        return [alert_record(row) for row in await self._fetch(_BY_ID, list(ids))]

    async def unpublished(self, limit: int) -> list[AlertRecord]:
        """The oldest ``limit`` alerts in the outbox: their events are not known to be published."""
        return [alert_record(row) for row in await self._fetch(_UNPUBLISHED, limit)]

    async def published(self, ids: Sequence[int]) -> None:
        """Their events are in Redis: out of the outbox."""
        try:
            await self._pool.execute(_PUBLISHED, list(ids), timeout=STATEMENT_TIMEOUT_S)
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; published alerts left in the outbox") from exc

    async def page(self, query: AlertQuery) -> list[AlertRecord]:
        """Up to ``query.limit`` alerts matching ``query``, newest first, after its cursor."""
        conditions: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.exchange_id is not None:
            conditions.append(f"a.exchange_id = {arg(query.exchange_id)}")
        if query.symbol is not None:
            conditions.append(f"a.symbol = {arg(query.symbol)}")
        if query.timeframe is not None:
            conditions.append(f"a.timeframe = {arg(query.timeframe.value)}")
        if query.since_ms is not None:
            conditions.append(f"a.triggered_at >= {_MS.format(arg(query.since_ms) + '::bigint')}")
        if query.after is not None:
            triggered_ms, alert_id = query.after
            bound = _MS.format(arg(triggered_ms) + "::bigint")
            conditions.append(f"(a.triggered_at, a.id) < ({bound}, {arg(alert_id)}::bigint)")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"{_SELECT}{where} ORDER BY a.triggered_at DESC, a.id DESC LIMIT {arg(query.limit)}"
        try:
            rows = await self._history.fetch(sql, *args, timeout=STATEMENT_TIMEOUT_S)
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; alerts not read") from exc
        return [alert_record(row) for row in rows]

    async def _fetch(self, sql: str, *args: Any, conn: Connection | None = None) -> list[asyncpg.Record]:
        try:
            return await (conn or self._pool).fetch(sql, *args, timeout=STATEMENT_TIMEOUT_S)
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; alerts not read or stored") from exc


def alert_record(row: asyncpg.Record) -> AlertRecord:
    return AlertRecord(
        id=row["id"],
        exchange_id=row["exchange_id"],
        exchange=row["exchange"],
        symbol=row["symbol"],
        timeframe=Timeframe(row["timeframe"]),
        alert_type=row["alert_type"],
        signal_type=row["signal_type"],
        direction=Direction(row["direction"]),
        strength=Strength(row["strength"]),
        trigger_value=row["trigger_value"],
        signal_delta=row["signal_delta"],
        trigger_label=row["trigger_label"],
        price=Decimal(row["price"]),
        triggered_ms=row["triggered_ms"],
    )
