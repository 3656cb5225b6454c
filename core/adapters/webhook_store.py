"""Webhook endpoints and their outbox in PostgreSQL (``0008_webhooks.sql``; docs/design/webhooks.md).

The outbox rows of an alert are written by :class:`~core.adapters.alert_store.AlertStore` in the statement
that stores the alert (:data:`OUTBOX_CTE`); this adapter serves the endpoints' registration, the delivery
worker's claims and outcomes, and the delivery log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core.adapters.postgres import STATEMENT_TIMEOUT_S, UNAVAILABLE_ERRORS
from core.domain.errors import Unavailable

# The alert store's CTE: one pending delivery per (stored alert, enabled endpoint whose filters match), in
# alert order. ``stored`` is the CTE of the alerts that statement stored.
OUTBOX_CTE = """
hooks AS (
    INSERT INTO webhook_deliveries (endpoint_id, alert_id, event_type)
    SELECT w.id, s.id, 'trade_signal'
    FROM stored s
    JOIN exchanges x ON x.id = s.exchange_id
    JOIN webhook_endpoints w ON w.enabled
        AND (w.exchange IS NULL OR w.exchange = x.name)
        AND (w.symbol IS NULL OR w.symbol = s.symbol)
        AND (w.timeframe IS NULL OR w.timeframe = s.timeframe)
        AND (w.signal_type IS NULL OR w.signal_type = s.signal_type)
    ORDER BY s.id, w.id
)"""

_ENDPOINT_COLUMNS = (
    "w.id, w.public_id, w.key_id, w.url, w.secret_sealed, w.exchange, w.symbol, w.timeframe, w.signal_type,"
    " w.enabled, w.disabled_reason, w.created_at"
)
_DELIVERY_COLUMNS = (
    "d.id, d.event_id::text AS event_id, d.endpoint_id, d.alert_id, d.event_type, d.status, d.attempts,"
    " d.last_status_code, d.last_error, d.created_at, d.last_attempt_at, d.next_attempt_at, d.delivered_at"
)

_CREATE = f"""
WITH counted AS (SELECT count(*) AS n FROM webhook_endpoints WHERE key_id = $2)
INSERT INTO webhook_endpoints (public_id, key_id, url, secret_sealed, exchange, symbol, timeframe, signal_type)
SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM counted WHERE counted.n < $9
RETURNING {_ENDPOINT_COLUMNS.replace("w.", "")}
"""
_LIST = f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints w WHERE w.key_id = $1 ORDER BY w.id"
_ONE = f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints w WHERE w.key_id = $1 AND w.public_id = $2"
_DELETE = "DELETE FROM webhook_endpoints WHERE key_id = $1 AND public_id = $2"
_LOG = f"""
SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.endpoint_id = $1 ORDER BY d.id DESC LIMIT $2
"""
# Due: the oldest pending delivery of each enabled endpoint (order per endpoint; one probe of the partial
# index per endpoint, however long a backlog), its time come, not leased by a core now. Locked with SKIP
# LOCKED while the lease is written, so two cores never take one row.
_CLAIM = f"""
WITH heads AS (
    SELECT h.id
    FROM webhook_endpoints w
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at, d.leased_until FROM webhook_deliveries d
        WHERE d.endpoint_id = w.id AND d.status = 'pending' AND d.event_type = 'trade_signal'
        ORDER BY d.id LIMIT 1
    ) h
    WHERE w.enabled AND h.next_attempt_at <= now() AND (h.leased_until IS NULL OR h.leased_until < now())
), due AS (
    SELECT d.id FROM webhook_deliveries d JOIN heads h ON h.id = d.id
    WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND (d.leased_until IS NULL OR d.leased_until < now())
    ORDER BY d.next_attempt_at, d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d SET leased_until = now() + $2 * interval '1 second'
FROM due WHERE d.id = due.id
RETURNING {_DELIVERY_COLUMNS}
"""
_DELIVERED = """
UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, last_status_code = $2,
    last_error = '', last_attempt_at = now(), delivered_at = now(), leased_until = NULL
WHERE id = $1
"""
# A failed attempt: retried at $4 seconds from now, unless the delivery is older than $5 seconds (then failed).
_FAILED = """
UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = $2, last_error = $3,
    last_attempt_at = now(), leased_until = NULL,
    status = CASE WHEN now() + $4 * interval '1 second' > created_at + $5 * interval '1 second'
                  THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now() + $4 * interval '1 second'
WHERE id = $1
RETURNING status
"""
_GONE = """
WITH endpoint AS (
    UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2 WHERE id = $1 RETURNING id
)
UPDATE webhook_deliveries SET status = 'failed', last_error = $2, leased_until = NULL
WHERE endpoint_id = (SELECT id FROM endpoint) AND status = 'pending'
"""
_PING = """
INSERT INTO webhook_deliveries (endpoint_id, event_type, status, attempts, last_status_code, last_error,
                                last_attempt_at, delivered_at, next_attempt_at, event_id)
VALUES ($1, 'ping', $2, 1, $3, $4, now(), CASE WHEN $2 = 'delivered' THEN now() END, now(), $5::uuid)
RETURNING id
"""
_PING_ROW = f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.id = $1"
_ENDPOINT_BY_ROW = f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints w WHERE w.id = $1"
# Finished deliveries are kept a week: the log shows the newest of them.
_PRUNE = """
DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < now() - interval '7 days'
"""


@dataclass(frozen=True, slots=True)
class Endpoint:
    row_id: int
    public_id: str
    key_id: int
    url: str
    secret_sealed: bytes
    exchange: str | None
    symbol: str | None
    timeframe: str | None
    signal_type: str | None
    enabled: bool
    disabled_reason: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    row_id: int
    event_id: str
    endpoint_id: int
    alert_id: int | None
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


def _endpoint(row: asyncpg.Record) -> Endpoint:
    return Endpoint(
        row_id=row["id"],
        public_id=row["public_id"],
        key_id=row["key_id"],
        url=row["url"],
        secret_sealed=bytes(row["secret_sealed"]),
        exchange=row["exchange"],
        symbol=row["symbol"],
        timeframe=row["timeframe"],
        signal_type=row["signal_type"],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
    )


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        row_id=row["id"],
        event_id=row["event_id"],
        endpoint_id=row["endpoint_id"],
        alert_id=row["alert_id"],
        event_type=row["event_type"],
        status=row["status"],
        attempts=row["attempts"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        last_attempt_at=row["last_attempt_at"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        delivered_at=row["delivered_at"],
    )


class WebhookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        public_id: str,
        key_id: int,
        url: str,
        secret_sealed: bytes,
        filters: tuple[str | None, str | None, str | None, str | None],
        max_endpoints: int,
    ) -> Endpoint | None:
        """The new endpoint, or None when the key already has ``max_endpoints``."""
        rows = await self._fetch(_CREATE, public_id, key_id, url, secret_sealed, *filters, max_endpoints)
        return _endpoint(rows[0]) if rows else None

    async def endpoints(self, key_id: int) -> list[Endpoint]:
        return [_endpoint(row) for row in await self._fetch(_LIST, key_id)]

    async def get(self, key_id: int, public_id: str) -> Endpoint | None:
        rows = await self._fetch(_ONE, key_id, public_id)
        return _endpoint(rows[0]) if rows else None

    async def endpoint(self, row_id: int) -> Endpoint | None:
        rows = await self._fetch(_ENDPOINT_BY_ROW, row_id)
        return _endpoint(rows[0]) if rows else None

    async def delete(self, key_id: int, public_id: str) -> bool:
        return await self._execute(_DELETE, key_id, public_id) != "DELETE 0"

    async def log(self, endpoint_id: int, limit: int) -> list[Delivery]:
        return [_delivery(row) for row in await self._fetch(_LOG, endpoint_id, limit)]

    async def claim(self, limit: int, lease_s: float) -> list[Delivery]:
        return [_delivery(row) for row in await self._fetch(_CLAIM, limit, lease_s)]

    async def delivered(self, delivery_id: int, status_code: int) -> None:
        await self._execute(_DELIVERED, delivery_id, status_code)

    async def failed(
        self, delivery_id: int, status_code: int | None, error: str, retry_in_s: float, retry_for_s: float
    ) -> str:
        """Records a failed attempt; the delivery's status after it (``pending`` or ``failed``)."""
        rows = await self._fetch(_FAILED, delivery_id, status_code, error[:500], retry_in_s, retry_for_s)
        return str(rows[0]["status"]) if rows else "failed"

    async def gone(self, endpoint_id: int, reason: str) -> None:
        """The endpoint answered 410: disabled, and its pending deliveries failed."""
        await self._execute(_GONE, endpoint_id, reason)

    async def ping(self, endpoint_id: int, event_id: str, status: str, status_code: int | None, error: str) -> Delivery:
        rows = await self._fetch(_PING, endpoint_id, status, status_code, error[:500], event_id)
        found = await self._fetch(_PING_ROW, rows[0]["id"])
        return _delivery(found[0])

    async def prune(self) -> None:
        await self._execute(_PRUNE)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return await self._pool.fetch(sql, *args, timeout=STATEMENT_TIMEOUT_S)
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; webhooks not read or stored") from exc

    async def _execute(self, sql: str, *args: Any) -> str:
        try:
            return str(await self._pool.execute(sql, *args, timeout=STATEMENT_TIMEOUT_S))
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; webhooks not read or stored") from exc
