"""Exchanges from PostgreSQL, with their liveness from the heartbeat keys in Redis.

With Redis unreachable (refused, or no answer within :data:`HEARTBEAT_READ_TIMEOUT_S`)
the exchanges are still listed, every one **offline** with no heartbeat time:
the status says whether a writer is known to be feeding the exchange, and
none can be while Redis is gone (a writer holds its lease and publishes its
events there, and stands by without it). The list never fails for the
heartbeats alone (they share the hash tag ``{exchanges}``: one ``MGET`` on one
slot, on one server or a Redis Cluster alike). PostgreSQL being unavailable is ``StorageUnavailable``
(UNAVAILABLE at the edge), never a driver error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from core.adapters.postgres import STATEMENT_TIMEOUT_S, UNAVAILABLE_ERRORS
from core.adapters.redis_client import REDIS_DOWN_ERRORS, REDIS_ERRORS, RedisClient, reply_bytes
from core.adapters.redis_keys import RedisKeys
from core.domain.errors import NotFound, StorageUnavailable
from core.domain.models import Exchange, Symbol

logger = logging.getLogger(__name__)

HEARTBEAT_READ_TIMEOUT_S = 0.5


class PgExchangeSource:
    def __init__(self, pool: asyncpg.Pool, redis: RedisClient, keys: RedisKeys) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys

    async def list_exchanges(self) -> list[Exchange]:
        try:
            rows = await self._pool.fetch(
                "SELECT id, name, display_name, simulated FROM exchanges ORDER BY name", timeout=STATEMENT_TIMEOUT_S
            )
        except UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable("postgresql", "PostgreSQL is unavailable; exchanges cannot be listed") from exc
        beats = await self._heartbeats([row["name"] for row in rows])
        return [
            Exchange(
                id=row["id"],
                name=row["name"],
                display_name=row["display_name"],
                simulated=row["simulated"],
                last_heartbeat=_parse_heartbeat(beat),
            )
            for row, beat in zip(rows, beats, strict=True)
        ]

    async def _heartbeats(self, names: list[str]) -> list[bytes | None]:
        """Each exchange's heartbeat value; all None (offline) when Redis cannot be read."""
        if not names:
            return []
        try:
            async with asyncio.timeout(HEARTBEAT_READ_TIMEOUT_S):
                beats = await self._redis.mget([self._keys.exchange_heartbeat(n) for n in names])
        except REDIS_DOWN_ERRORS as exc:
            logger.warning("exchange heartbeats unreadable (%s): every exchange listed offline", type(exc).__name__)
            return [None] * len(names)
        return [reply_bytes(beat) for beat in beats]

    async def list_symbols(self, exchange: str) -> list[Symbol]:
        """Symbols of one exchange (``exchange`` given) or of all; an unknown exchange is NotFound."""
        name = exchange.strip().lower()
        try:
            rows = await self._pool.fetch(
                "SELECT s.id, s.exchange_id, e.name AS exchange, s.symbol, s.base, s.quote, s.active"
                " FROM symbols s JOIN exchanges e ON e.id = s.exchange_id"
                " WHERE $1 = '' OR e.name = $1 ORDER BY e.name, s.symbol",
                name,
                timeout=STATEMENT_TIMEOUT_S,
            )
            known = bool(rows) or not name or await self._pool.fetchval("SELECT 1 FROM exchanges WHERE name = $1", name)
        except UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable("postgresql", "PostgreSQL is unavailable; symbols cannot be listed") from exc
        if not known:
            raise NotFound(f"unknown exchange {exchange!r}")
        return [Symbol(**dict(row)) for row in rows]


class Heartbeat:
    """The writer's side: its wall clock in the exchange's heartbeat key, expiring after ``ttl_ms`` (what makes
    the exchange online while its venue is connected). Raises ``StorageUnavailable("redis")``."""

    def __init__(
        self, redis: RedisClient, keys: RedisKeys, exchange: str, *, clock_ms: Callable[[], int], ttl_ms: int
    ) -> None:
        self._redis = redis
        self._key = keys.exchange_heartbeat(exchange)
        self._clock_ms = clock_ms
        self._ttl_ms = ttl_ms

    async def __call__(self) -> None:
        try:
            await self._redis.set(self._key, self._clock_ms(), px=self._ttl_ms)
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", f"heartbeat not written ({type(exc).__name__}: {exc})") from exc


def _parse_heartbeat(value: bytes | None) -> datetime | None:
    """A heartbeat value is the writer's wall clock in epoch milliseconds; it expires when stale."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except ValueError:
        return None
