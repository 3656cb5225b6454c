"""Connections per API key, counted in Redis across every gateway instance, released even if one dies.

Each key has a sorted set of its open connection ids scored by an expiry time
(Redis ``TIME``, so gateway clocks do not matter). Opening a connection runs
one script: drop expired entries, refuse when the key is at its maximum, else
add the id. A live gateway refreshes the expiry of all its connections every
third of the lease; a gateway that is killed stops refreshing and its entries
expire within one lease. Closing removes the entry at once. One key per API
key, so the script touches a single key (Redis Cluster safe).
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import defaultdict

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

CONNECTIONS_KEY = "ws:connections:{{{key_id}}}"
DEFAULT_LEASE_S = 30.0
REFRESH_CHUNK = 500

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return #ARGV - 1
"""


class ConnectionCounter:
    """Acquire, refresh and release this instance's connection slots."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        self._redis = redis
        self._prefix = prefix
        self._lease_ms = max(1, int(lease_s * 1000))
        self._acquire = redis.register_script(_ACQUIRE)
        self._refresh = redis.register_script(_REFRESH)
        self._instance = secrets.token_hex(6)
        self._ids = itertools.count(1)
        self._held: dict[str, set[str]] = defaultdict(set)

    @property
    def refresh_interval_s(self) -> float:
        return self._lease_ms / 3000

    def key_of(self, key_id: int) -> str:
        return self._prefix + CONNECTIONS_KEY.format(key_id=key_id)

    async def acquire(self, key_id: int, limit: int) -> str | None:
        """A connection id when the key is below ``limit``, None when it is at its maximum."""
        key = self.key_of(key_id)
        connection_id = f"{self._instance}:{next(self._ids)}"
        if not await self._acquire(keys=[key], args=[connection_id, limit, self._lease_ms]):
            return None
        self._held[key].add(connection_id)
        return connection_id

    async def release(self, key_id: int, connection_id: str) -> None:
        key = self.key_of(key_id)
        held = self._held.get(key)
        if held is not None:
            held.discard(connection_id)
            if not held:
                del self._held[key]
        try:
            await self._redis.zrem(key, connection_id)
        except (RedisError, OSError) as exc:  # the entry expires within one lease anyway
            logger.warning("could not release a connection slot (%s)", type(exc).__name__)

    async def refresh(self) -> None:
        """Extend the lease of every connection this instance holds (one short script per 500)."""
        if not self._held:
            return
        for key, ids in list(self._held.items()):
            members = list(ids)
            for start in range(0, len(members), REFRESH_CHUNK):  # short scripts: Redis and this loop stay responsive
                chunk = members[start : start + REFRESH_CHUNK]
                await self._refresh(keys=[key], args=[self._lease_ms, *chunk])
