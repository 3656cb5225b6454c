"""Connections per API key, counted in Redis across every gateway instance, released even if one dies.

Each key has a sorted set of its open connection ids scored by an expiry time
(Redis ``TIME``, so gateway clocks do not matter). Opening a connection runs
one script: drop expired entries, refuse when the key is at its maximum, else
add the id. A live gateway refreshes the expiry of all its connections every
third of the lease; a gateway that is killed stops refreshing and its entries
expire within one lease. Closing removes the entry at once. One key per API
key, so the script touches a single key (Redis Cluster safe).

**After a Redis outage** every open connection holds exactly one slot again:

* the refresh re-adds (``ZADD``: never twice, a member is unique) every id
  this instance holds, so a Redis that restarted without its data gets them
  back, and removes the ids whose release failed during the outage (and an
  acquire whose answer was lost: it may have been counted);
* after a failed refresh, or with releases pending, the refresh runs every
  :data:`RETRY_S` instead of every third of the lease, so this happens
  within a second of Redis answering;
* an acquire on a key whose set is gone while this instance holds slots in
  it (the restart happened between two refreshes) puts those back first, so
  the new connection is counted against them and the limit holds (4008).

Slots other gateway instances hold come back at *their* next refresh; until
then (at most a third of the lease) a key may be admitted up to that many
more connections than its limit after Redis lost its data.

On a Redis Cluster the scripts and the ``ZREM`` go through redis-py's cluster
client to the master owning the key (``common.redis_clients.redis_py``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections import defaultdict

from redis.exceptions import RedisClusterException, RedisError

from common.redis_clients import RedisClient

logger = logging.getLogger(__name__)

CONNECTIONS_KEY = "ws:connections:{{{key_id}}}"
DEFAULT_LEASE_S = 30.0
REFRESH_CHUNK = 500
RETRY_S = 1.0

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
if tonumber(ARGV[4]) > 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

# ARGV: ttl, how many ids to (re-)add, those ids, then ids to remove.
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local adds = tonumber(ARGV[2])
for i = 3, 2 + adds do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
for i = 3 + adds, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
end
if adds > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return adds
"""
LOST = -1  # the acquire script's answer when the key's set is gone although this instance holds slots in it


class ConnectionCounter:
    """Acquire, refresh and release this instance's connection slots, and reconcile them after an outage."""

    def __init__(self, redis: RedisClient, *, prefix: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        self._redis = redis
        self._prefix = prefix
        self._lease_ms = max(1, int(lease_s * 1000))
        self._acquire = redis.register_script(_ACQUIRE)
        self._refresh = redis.register_script(_REFRESH)
        self._instance = secrets.token_hex(6)
        self._ids = itertools.count(1)
        self._held: dict[str, set[str]] = defaultdict(set)
        self._unreleased: dict[str, set[str]] = defaultdict(set)  # ids Redis may still hold that must go
        self._in_sync = True  # the last refresh reached Redis
        self._attention = asyncio.Event()  # something to reconcile: the refresh loop need not wait a third of a lease

    @property
    def refresh_interval_s(self) -> float:
        return self._lease_ms / 3000

    @property
    def next_refresh_s(self) -> float:
        """A third of the lease; :data:`RETRY_S` while something is to be reconciled (Redis did not answer)."""
        if self._in_sync and not self._unreleased:
            return self.refresh_interval_s
        return min(RETRY_S, self.refresh_interval_s)

    async def wait_for_refresh(self) -> None:
        """Until the next refresh is due: :attr:`next_refresh_s`, or sooner when a release or acquire failed."""
        try:
            async with asyncio.timeout(self.next_refresh_s):
                await self._attention.wait()
        except TimeoutError:
            pass
        self._attention.clear()

    def key_of(self, key_id: int) -> str:
        return self._prefix + CONNECTIONS_KEY.format(key_id=key_id)

    async def acquire(self, key_id: int, limit: int) -> str | None:
        """A connection id when the key is below ``limit``, None when it is at its maximum.

        A key whose set is gone while this instance holds slots in it (Redis restarted without its data)
        gets those slots back first, so the new connection is counted against them."""
        key = self.key_of(key_id)
        connection_id = f"{self._instance}:{next(self._ids)}"
        try:
            for _ in range(2):
                held = len(self._held.get(key, ()))
                answer = await self._acquire(keys=[key], args=[connection_id, limit, self._lease_ms, held])
                if answer != LOST:
                    break
                await self._refresh_key(key)
            else:
                answer = 0  # lost twice in a row: Redis keeps losing data; refuse rather than overcount
        except BaseException:
            self._unreleased[key].add(connection_id)  # the script may have run without its answer reaching us
            self._attention.set()
            raise
        if answer != 1:
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
        # Owed before the command is sent: the handler may be cancelled while the command waits for a Redis
        # that is down (Sanic cancels a closed connection's handler), and a release forgotten then leaks the
        # slot until its lease ends. A refresh that removes it meanwhile is harmless (ZREM is idempotent).
        self._unreleased[key].add(connection_id)
        try:
            await self._redis.zrem(key, connection_id)
        except (RedisError, RedisClusterException, OSError) as exc:  # removed at the next refresh (it expires anyway)
            self._attention.set()
            logger.warning("could not release a connection slot (%s); retried at the next refresh", type(exc).__name__)
        except BaseException:
            self._attention.set()
            raise
        else:
            owed = self._unreleased.get(key)
            if owed is not None:
                owed.discard(connection_id)
                if not owed:
                    del self._unreleased[key]

    async def refresh(self) -> None:
        """Extend the lease of every connection this instance holds, re-adding any that Redis lost, and
        remove the ones released while Redis did not answer (one short script per 500 ids)."""
        try:
            for key in list({*self._held, *self._unreleased}):
                await self._refresh_key(key)
        except BaseException:
            self._in_sync = False
            raise
        self._in_sync = True

    async def _refresh_key(self, key: str) -> None:
        members = list(self._held.get(key, ()))
        removing = list(self._unreleased.get(key, ()))
        for start in range(0, max(len(members), 1), REFRESH_CHUNK):  # short scripts: Redis and this loop stay live
            chunk = members[start : start + REFRESH_CHUNK]
            gone = removing if start == 0 else []
            await self._refresh(keys=[key], args=[self._lease_ms, len(chunk), *chunk, *gone])
        unreleased = self._unreleased.get(key)
        if unreleased is not None:
            unreleased.difference_update(removing)
            if not unreleased:
                del self._unreleased[key]
        # Released while the script was on its way: the script may have re-added them.
        returned = set(members) - self._held.get(key, set())
        if returned:
            self._unreleased[key].update(returned)
