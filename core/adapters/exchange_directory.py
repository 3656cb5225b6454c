"""Exchanges from PostgreSQL, with their liveness from the heartbeat keys in Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from core.adapters.redis_keys import RedisKeys
from core.domain.errors import NotFound
from core.domain.models import Exchange, Symbol


class PgExchangeSource:
    def __init__(self, pool: asyncpg.Pool, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys

    async def list_exchanges(self) -> list[Exchange]:
        rows = await self._pool.fetch("SELECT id, name, display_name, simulated FROM exchanges ORDER BY name")
        beats = await self._redis.mget([self._keys.exchange_heartbeat(row["name"]) for row in rows]) if rows else []
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

    async def list_symbols(self, exchange: str) -> list[Symbol]:
        """Symbols of one exchange (``exchange`` given) or of all; an unknown exchange is NotFound."""
        name = exchange.strip().lower()
        rows = await self._pool.fetch(
            "SELECT s.id, s.exchange_id, e.name AS exchange, s.symbol, s.base, s.quote, s.active"
            " FROM symbols s JOIN exchanges e ON e.id = s.exchange_id"
            " WHERE $1 = '' OR e.name = $1 ORDER BY e.name, s.symbol",
            name,
        )
        if not rows and name and not await self._pool.fetchval("SELECT 1 FROM exchanges WHERE name = $1", name):
            raise NotFound(f"unknown exchange {exchange!r}")
        return [Symbol(**dict(row)) for row in rows]


def _parse_heartbeat(value: bytes | None) -> datetime | None:
    """A heartbeat value is the writer's wall clock in epoch milliseconds; it expires when stale."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except ValueError:
        return None
