"""A lease in Redis that makes one core instance the only writer for an exchange.

``SET key owner NX PX ttl`` acquires; a script renews only while the value is
still ours. Besides what Redis says, the holder keeps a local lease: it is
valid until the moment the acquiring (or renewing) command was *sent* plus
the TTL minus a safety margin, on the monotonic clock. A holder that was
paused (GC, SIGSTOP, a slow disk) therefore sees its lease as expired when it
wakes up, before it writes anything, even though it never heard from Redis
that another instance took over.

Each acquisition also starts a new *term* (a counter in Redis): the fencing
token that :mod:`core.adapters.writer_fence` checks in PostgreSQL, so even a
write already on its way when the lease ran out cannot commit.

It is the :class:`~core.services.exchange_writer.Lease` of the writer: a
Redis that refuses, drops or times out a command raises
``StorageUnavailable("redis")``, never a redis-py error.

The lease and the term counter share the hash tag ``{exchanges}``, so every
script here and the read of both in :meth:`WriterLock.leader` (one ``MGET``)
is one command on one slot: each is sent alone through redis-py's client,
``Redis`` or ``RedisCluster`` alike, and no pipeline is needed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from core.adapters.redis_client import REDIS_ERRORS, RedisClient
from core.domain.errors import StorageUnavailable
from core.services.exchange_writer import Leader

T = TypeVar("T")

DEFAULT_TTL_MS = 5_000
SAFETY_MARGIN_MS = 500

# KEYS: lock, term counter. A successful acquire starts a new term (the fencing token).
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: term counter. ARGV: floor. The next acquisition then starts a term above the floor.
_RAISE_FLOOR = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
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
        redis: RedisClient,
        key: str,
        term_key: str,
        owner: str,
        *,
        ttl_ms: int = DEFAULT_TTL_MS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._key = key
        self._term_key = term_key
        self.term = 0
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._monotonic = monotonic
        self._valid_until = 0.0
        self._sent = 0.0  # when the last successful acquire or renewal was sent
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._raise_floor = redis.register_script(_RAISE_FLOOR)

    def held(self) -> bool:
        """True while the local lease is valid: check this before every write."""
        return self._monotonic() < self._valid_until

    def renewal_due_in(self) -> float:
        """Seconds until the next renewal is due (a third of the TTL after the last one was sent; <= 0: now).

        Counted from the acquisition, not from when the holder got round to renewing: whatever the
        holder does first (a fence claim, rebuilding candles) must not eat into the lease.
        """
        return self._sent + self.ttl_ms / 3000 - self._monotonic()

    async def leader(self) -> Leader:
        """The lease's holder and the newest term, read from Redis."""
        owner, term = await _redis(self._redis.mget(self._key, self._term_key), "the writer lease's holder not read")
        return Leader(owner.decode() if isinstance(owner, bytes) else owner, int(term or 0))

    async def acquire(self) -> bool:
        """Take the lease if it is free; on success ``term`` is the new fencing token."""
        sent = self._monotonic()
        acquiring = self._acquire(keys=[self._key, self._term_key], args=[self.owner, self.ttl_ms])
        term = int(await _redis(acquiring, "the writer lease not acquired"))
        if term:
            self.term = term
            self._extend(sent)
            return True
        return False

    async def renew(self) -> bool:
        """Extend the lease if it is still ours; False means another instance may write now."""
        sent = self._monotonic()
        if await _redis(self._renew(keys=[self._key], args=[self.owner, self.ttl_ms]), "the writer lease not renewed"):
            self._extend(sent)
            return True
        self._valid_until = 0.0
        return False

    async def raise_term_floor(self, floor: int) -> None:
        """Make the next term start above ``floor`` (the term counter in Redis was lost or is behind)."""
        await _redis(self._raise_floor(keys=[self._term_key], args=[floor]), "the writer term floor not raised")

    async def release(self) -> None:
        self._valid_until = 0.0
        await _redis(self._release(keys=[self._key], args=[self.owner]), "the writer lease not released")

    def _extend(self, sent: float) -> None:
        self._sent = sent
        self._valid_until = sent + (self.ttl_ms - SAFETY_MARGIN_MS) / 1000


async def _redis(call: Awaitable[T], what: str) -> T:
    try:
        return await call
    except REDIS_ERRORS as exc:
        raise StorageUnavailable("redis", f"{what} ({type(exc).__name__}: {exc})") from exc
