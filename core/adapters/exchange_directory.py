"""Exchanges from PostgreSQL, with their liveness from the heartbeat keys in Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from core.adapters.redis_keys import RedisKeys
from core.domain.models import Exchange


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


def _parse_heartbeat(value: bytes | None) -> datetime | None:
    """A heartbeat value is the writer's wall clock in epoch milliseconds; it expires when stale."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except ValueError:
        return None
