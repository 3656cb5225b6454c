"""The latest price per (symbol, source) in Redis, with a TTL, never overwritten by an older tick."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import redis.asyncio as aioredis

from core.adapters.redis_keys import RedisKeys
from core.domain.prices import Tick, decimal_str

LATEST_TTL_MS = 60_000
SOURCES_TTL_MS = 24 * 3600 * 1000

# KEYS[1] latest hash. ARGV: ts_ms, ttl_ms, then field/value pairs. Writes only a newer tick.
_SET_IF_NEWER = """
local current = tonumber(redis.call('HGET', KEYS[1], 'ts') or '-1')
if tonumber(ARGV[1]) < current then return 0 end
redis.call('HSET', KEYS[1], 'ts', ARGV[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class LatestPrice:
    symbol: str
    source: str
    price: Decimal
    volume: Decimal
    ts_ms: int


class PriceCache:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, *, ttl_ms: int = LATEST_TTL_MS) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = ttl_ms
        self._set_if_newer = redis.register_script(_SET_IF_NEWER)

    async def update(self, ticks: Sequence[Tick]) -> None:
        """Record the newest tick of each (symbol, source) unless Redis already has a newer one."""
        newest: dict[tuple[str, str], Tick] = {}
        for tick in ticks:
            known = newest.get((tick.symbol, tick.source))
            if known is None or tick.ts_ms >= known.ts_ms:
                newest[(tick.symbol, tick.source)] = tick
        if not newest:
            return
        sources: dict[str, dict[str, int]] = {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for tick in newest.values():
                fields = ["price", decimal_str(tick.price), "volume", decimal_str(tick.volume)]
                await self._set_if_newer(
                    keys=[self._keys.latest_price(tick.source, tick.symbol)],
                    args=[tick.ts_ms, self._ttl_ms, *fields],
                    client=pipe,
                )
                sources.setdefault(tick.symbol, {})[tick.source] = tick.ts_ms
            for symbol, seen in sources.items():
                key = self._keys.price_sources(symbol)
                pipe.zadd(key, seen, gt=True)  # type: ignore[arg-type]
                pipe.pexpire(key, SOURCES_TTL_MS)
            await pipe.execute()

    async def latest(self, symbol: str) -> list[LatestPrice]:
        """The live latest price of every source of ``symbol``, newest first (expired ones are skipped)."""
        sources = [s.decode() for s in await self._redis.zrevrange(self._keys.price_sources(symbol), 0, -1)]
        if not sources:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for source in sources:
                pipe.hgetall(self._keys.latest_price(source, symbol))
            rows = await pipe.execute()
        found = [
            LatestPrice(
                symbol, source, Decimal(row[b"price"].decode()), Decimal(row[b"volume"].decode()), int(row[b"ts"])
            )
            for source, row in zip(sources, rows, strict=True)
            if row
        ]
        return sorted(found, key=lambda p: p.ts_ms, reverse=True)
