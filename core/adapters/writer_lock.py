"""A lease in Redis that makes one core instance the only writer for an exchange.

``SET key owner NX PX ttl`` acquires; a script renews only while the value is
still ours. Besides what Redis says, the holder keeps a local lease: it is
valid until the moment the acquiring (or renewing) command was *sent* plus
the TTL minus a safety margin, on the monotonic clock. A holder that was
paused (GC, SIGSTOP, a slow disk) therefore sees its lease as expired when it
wakes up, before it writes anything, even though it never heard from Redis
that another instance took over.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis

DEFAULT_TTL_MS = 5_000
SAFETY_MARGIN_MS = 500

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class WriterLock:
    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        owner: str,
        *,
        ttl_ms: int = DEFAULT_TTL_MS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._key = key
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._monotonic = monotonic
        self._valid_until = 0.0
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def held(self) -> bool:
        """True while the local lease is valid: check this before every write."""
        return self._monotonic() < self._valid_until

    async def acquire(self) -> bool:
        sent = self._monotonic()
        if await self._redis.set(self._key, self.owner, nx=True, px=self.ttl_ms):
            self._extend(sent)
            return True
        return False

    async def renew(self) -> bool:
        """Extend the lease if it is still ours; False means another instance may write now."""
        sent = self._monotonic()
        if await self._renew(keys=[self._key], args=[self.owner, self.ttl_ms]):
            self._extend(sent)
            return True
        self._valid_until = 0.0
        return False

    async def release(self) -> None:
        self._valid_until = 0.0
        await self._release(keys=[self._key], args=[self.owner])

    def _extend(self, sent: float) -> None:
        self._valid_until = sent + (self.ttl_ms - SAFETY_MARGIN_MS) / 1000
