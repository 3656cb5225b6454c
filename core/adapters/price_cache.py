"""The latest price per (symbol, source) in Redis, and the ``prices:`` streams, written together.

For one (source, symbol) pair, the latest-price hash and the pair's stream
(sequence, history, sharded channel) share the hash tag ``{source:SYMBOL}``,
so one script per pair and write does both: the hash is replaced only by a
tick at least as new (60 s TTL), then each tick is published as a
``price_update`` event in time order (encoded by :mod:`core.codec.events`,
stamped with this cache's clock). A write Redis cannot take raises
``StorageUnavailable("redis")``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import redis.asyncio as aioredis

from core.adapters.events import HISTORY_MAXLEN, publish_lua, wall_clock_ms
from core.adapters.redis_client import reply_members
from core.adapters.redis_keys import RedisKeys
from core.codec.events import price_channel, price_event
from core.domain.errors import StorageUnavailable
from core.domain.prices import Tick, decimal_str

LATEST_TTL_MS = 60_000
SOURCES_TTL_MS = 24 * 3600 * 1000

# KEYS: latest hash, then the stream's sequence, history, channel.
# ARGV: ts, ttl, price, volume, history maxlen, then the event payloads.
_WRITE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'ts') or '-1')
if tonumber(ARGV[1]) >= current then
  redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'price', ARGV[3], 'volume', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
""" + publish_lua(first_key=2, maxlen_arg=5, first_payload_arg=6)


@dataclass(frozen=True, slots=True)
class LatestPrice:
    symbol: str
    source: str
    price: Decimal
    volume: Decimal
    ts_ms: int


class PriceCache:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RedisKeys,
        *,
        ttl_ms: int = LATEST_TTL_MS,
        history_maxlen: int = HISTORY_MAXLEN,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = ttl_ms
        self._maxlen = history_maxlen
        self._clock_ms = clock_ms  # an event's publish_time
        self._write = redis.register_script(_WRITE)

    async def write(self, ticks: Sequence[Tick]) -> None:
        """Latest prices and one ``price_update`` event per tick, one script per pair."""
        now = self._clock_ms()
        by_pair: dict[tuple[str, str], list[tuple[Tick, bytes]]] = {}
        for tick in sorted(ticks, key=lambda t: t.ts_ms):
            by_pair.setdefault((tick.source, tick.symbol), []).append((tick, price_event(tick, now_ms=now)))
        if not by_pair:
            return
        try:
            await self._write_pairs(by_pair)
        except (aioredis.RedisError, OSError) as exc:
            raise StorageUnavailable("redis", f"latest prices not written ({type(exc).__name__}: {exc})") from exc

    async def _write_pairs(self, by_pair: dict[tuple[str, str], list[tuple[Tick, bytes]]]) -> None:
        sources: dict[str, dict[str, int]] = {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for (source, symbol), pair_updates in by_pair.items():
                newest = pair_updates[-1][0]
                channel = price_channel(newest)
                await self._write(
                    keys=[self._keys.latest_price(source, symbol), *self._keys.stream_keys(channel)],
                    args=[
                        newest.ts_ms,
                        self._ttl_ms,
                        decimal_str(newest.price),
                        decimal_str(newest.volume),
                        self._maxlen,
                        *(payload for _, payload in pair_updates),
                    ],
                    client=pipe,
                )
                sources.setdefault(symbol, {})[source] = newest.ts_ms
            for symbol, seen in sources.items():
                key = self._keys.price_sources(symbol)
                pipe.zadd(key, seen, gt=True)
                pipe.pexpire(key, SOURCES_TTL_MS)
            await pipe.execute()

    async def latest(self, symbol: str) -> list[LatestPrice]:
        """The live latest price of every source of ``symbol``, newest first (expired ones are skipped)."""
        members = reply_members(await self._redis.zrevrange(self._keys.price_sources(symbol), 0, -1))
        sources = [s.decode() for s in members]
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
