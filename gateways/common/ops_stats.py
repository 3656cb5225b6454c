"""Each gateway's own numbers, shared through Redis for the operator view (``/console/ops``).

Every gateway process (REST or WebSocket, however many) writes a small JSON record of its counters into Redis
every :data:`HEARTBEAT_S` seconds, with a TTL of :data:`RECORD_TTL_S`: its id, kind, address, and what it
counts (the WebSocket gateway's connections, channels, skipped events and slow-client closes; the REST
gateway's requests in flight and served, and the API keys it saw spend the most of their rate limit in the
current window). A gateway that stops deletes its record; one that dies simply stops writing, and its record
expires within the TTL. The REST gateway's ``GET /internal/v1/ops`` reads every live record.

Keys (``P`` the prefix), all with the one hash tag ``{gateways}`` so the writer's three commands and the
reader's ``MGET`` each touch a single slot on a Redis Cluster::

    P ops:{gateways}:index          ZSET of gateway ids (score: when the record was written, epoch ms)
    P ops:{gateways}:stats:<id>     the gateway's JSON record (PX RECORD_TTL_S)

The index only lists; the records' TTL decides who is alive. A reader drops the ids whose record is gone, so
the index never grows beyond the gateways seen within :data:`INDEX_TTL_S`. A few gateways writing every two
seconds is nothing for one slot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisClusterException, RedisError

from common.redis_clients import RedisClient

logger = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
RECORD_TTL_S = 10.0
INDEX_TTL_S = 3600.0
WRITE_TIMEOUT_S = 1.0
MAX_GATEWAYS = 1000  # read at most this many records (an index gone wild cannot make the view huge)
TAG = "{gateways}"
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)

Counts = Callable[[], Mapping[str, Any]]


def index_key(prefix: str) -> str:
    return f"{prefix}ops:{TAG}:index"


def record_key(prefix: str, gateway_id: str) -> str:
    return f"{prefix}ops:{TAG}:stats:{gateway_id}"


def gateway_id(kind: str, port: int, host: str | None = None) -> str:
    """``ws@<host name>:<port>``: stable across a restart on the same host and port (the new record replaces
    the old one), distinct for every gateway of a host."""
    return f"{kind}@{host or socket.gethostname()}:{port}"


@dataclass(slots=True)
class Heartbeat:
    """Writes this gateway's record every :data:`HEARTBEAT_S` (run it under the gateway's task supervisor)."""

    redis: RedisClient
    prefix: str
    kind: str
    gateway: str
    addr: str
    version: str
    counts: Counts
    started_ms: int = 0
    interval_s: float = HEARTBEAT_S
    ttl_s: float = RECORD_TTL_S
    _failing: bool = False
    _stopped: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.started_ms = self.started_ms or int(time.time() * 1000)

    def record(self) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        return {
            "id": self.gateway,
            "kind": self.kind,
            "addr": self.addr,
            "pid": os.getpid(),
            "version": self.version,
            "started_ms": self.started_ms,
            "updated_ms": now_ms,
            **self.counts(),
        }

    async def beat(self) -> None:
        """One write: the record with its TTL, and the id in the index (both in the ``{gateways}`` slot)."""
        async with self._lock, asyncio.timeout(WRITE_TIMEOUT_S):
            if self._stopped:
                return
            record = self.record()
            await self.redis.set(record_key(self.prefix, self.gateway), orjson.dumps(record), px=int(self.ttl_s * 1000))
            await self.redis.zadd(index_key(self.prefix), {self.gateway: record["updated_ms"]})
            await self.redis.pexpire(index_key(self.prefix), int(INDEX_TTL_S * 1000))

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
            except REDIS_ERRORS as exc:  # Redis down: the record expires and the view shows the gateway gone
                if not self._failing:
                    logger.warning("the ops heartbeat was not written (%s); retrying", type(exc).__name__)
                self._failing = True
            else:
                if self._failing:
                    logger.info("the ops heartbeat is written again")
                self._failing = False
            await asyncio.sleep(self.interval_s)

    async def remove(self) -> None:
        """Best effort, on a clean stop: the gateway leaves the view at once instead of after the TTL."""
        try:
            async with self._lock, asyncio.timeout(WRITE_TIMEOUT_S):
                self._stopped = True  # a beat waiting for the lock writes nothing after this
                await self.redis.delete(record_key(self.prefix, self.gateway))
                await self.redis.zrem(index_key(self.prefix), self.gateway)
        except REDIS_ERRORS as exc:
            logger.info("the ops record was not removed (%s); it expires", type(exc).__name__)


async def read_records(redis: RedisClient, prefix: str) -> list[dict[str, Any]]:
    """Every live gateway record, by kind then id; the ids whose record expired leave the index."""
    index = index_key(prefix)
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in await redis.zrange(index, 0, MAX_GATEWAYS - 1)]
    if not ids:
        return []
    values: Sequence[Any] = await redis.mget([record_key(prefix, i) for i in ids])
    records, gone = [], []
    for gid, value in zip(ids, values, strict=True):
        if value is None:
            gone.append(gid)
            continue
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            gone.append(gid)
            continue
        if isinstance(record, dict):
            records.append(record)
    if gone:
        await redis.zrem(index, *gone)
    records.sort(key=lambda r: (str(r.get("kind", "")), str(r.get("id", ""))))
    return records
