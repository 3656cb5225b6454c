"""Reads that may go to a streaming replica (``PERSEUS_DATABASE_READ_URL``), bounded by how stale it is.

:class:`ReadPool` stands where a read-only adapter expects an ``asyncpg.Pool`` (``acquire``, ``fetch``,
``fetchrow``, ``fetchval``) and hands each call to the replica while the replica is fresh enough, to the
primary otherwise. The price range, consensus, candle history and alert history reads use it; every
write, and every read that must see the writer's own last write (the writer's rebuild, the outbox),
stays on the primary.

How stale is the replica? Not ``now() - pg_last_xact_replay_timestamp()``: on an idle primary that
grows without end, and a replica cut off from its primary looks fresh by the other usual test
(received = replayed). Instead :meth:`ReadPool.check` (every second, under the core's supervisor) reads
the primary's flushed WAL position and remembers when it saw it, then reads the replica's replayed
position: the replica holds everything the primary had flushed at the newest remembered moment whose
position it has replayed. Its staleness is the time since that moment: exact to the check interval,
whether the primary is busy or idle, and infinite when the replica stops replaying or answering.
Above ``PERSEUS_DATABASE_READ_MAX_LAG_S`` (or unreachable, or not a standby) reads go to the primary
until it catches up; each switch is logged once.

A read already running on the replica when it dies fails like any read on a lost database
(``UNAVAILABLE``, retry); the next check, within a second, moves reads to the primary.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import asyncpg

from core.adapters.postgres import DEFAULT_CONNECT_TIMEOUT_S, UNAVAILABLE_ERRORS

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
CHECK_TIMEOUT_S = 1.0
SAMPLES = 4096
_LSN = "SELECT {}() - '0/0'::pg_lsn"
_CHECK_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, asyncpg.PostgresError)


async def open_replica(url: str, *, max_size: int) -> asyncpg.Pool:
    """A pool that connects on first use: a replica down when the core starts is retried by the checks."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url, min_size=0, max_size=max_size, timeout=DEFAULT_CONNECT_TIMEOUT_S
    )
    return pool


class ReadPool:
    def __init__(
        self,
        primary: asyncpg.Pool,
        replica: asyncpg.Pool | None,
        *,
        max_lag_s: float,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        """``replica`` None: every call goes to the primary (no ``PERSEUS_DATABASE_READ_URL``)."""
        self._primary = primary
        self._replica = replica
        self._max_lag_s = max_lag_s
        self._clock = clock
        self._interval_s = interval_s
        # (when, the primary's flushed WAL position), oldest first; bounded: a replica stuck for hours
        # needs no sample older than the one it will eventually pass
        self._seen: deque[tuple[float, int]] = deque(maxlen=SAMPLES)
        self._probe: asyncio.Future[Any] | None = None
        self._caught_up_at: float | None = None  # when the primary had flushed no more than the replica replayed
        self.staleness_s = math.inf
        self.on_replica = False  # until the first check says it is fresh
        self.replica_reads = 0
        self.primary_reads = 0

    @property
    def current(self) -> asyncpg.Pool:
        if self.on_replica and self._replica is not None:
            self.replica_reads += 1
            return self._replica
        self.primary_reads += 1
        return self._primary

    def acquire(self, *, timeout: float | None = None) -> Any:
        return self.current.acquire(timeout=timeout)

    async def fetch(self, query: str, *args: object, timeout: float | None = None) -> list[asyncpg.Record]:  # noqa: ASYNC109
        return await self.current.fetch(query, *args, timeout=timeout)

    async def fetchrow(self, query: str, *args: object, timeout: float | None = None) -> asyncpg.Record | None:  # noqa: ASYNC109
        return await self.current.fetchrow(query, *args, timeout=timeout)

    async def fetchval(self, query: str, *args: object, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        return await self.current.fetchval(query, *args, timeout=timeout)

    async def run(self) -> None:
        """Check every ``interval_s`` until cancelled (a supervised task of the core)."""
        while True:
            await self.check()
            await asyncio.sleep(self._interval_s)

    async def check(self) -> float:
        """Measure the replica's staleness, choose where reads go; returns the staleness in seconds."""
        if self._replica is None:
            return math.inf
        try:
            flushed = await self._primary.fetchval(_LSN.format("pg_current_wal_flush_lsn"), timeout=CHECK_TIMEOUT_S)
            self._seen.append((self._clock(), int(flushed)))
            replayed = await self._ask_replica()
        except _CHECK_ERRORS as exc:
            self._choose(math.inf, f"{type(exc).__name__}: {exc}")
            return self.staleness_s
        if replayed is None:  # not a standby (promoted, or pointed at a primary): its data is its own
            self._choose(math.inf, "not a standby")
            return self.staleness_s
        caught_up, replayed = None, int(replayed)
        while self._seen and self._seen[0][1] <= replayed:
            caught_up = self._seen.popleft()
        if caught_up is not None:
            self._caught_up_at = caught_up[0]
        self._choose(math.inf if self._caught_up_at is None else self._clock() - self._caught_up_at, "")
        return self.staleness_s

    async def _ask_replica(self) -> Any:
        """The replica's replayed position, within :data:`CHECK_TIMEOUT_S` or TimeoutError.

        The probe runs as a task of its own that is left behind, not awaited, when it is late: cancelling a
        query on a frozen server makes asyncpg wait for that server to hand the connection back, and the check
        would hang with it. One probe at a time: while a late one is still out, the replica counts as stale.
        """
        assert self._replica is not None
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._replica.fetchval(_LSN.format("pg_last_wal_replay_lsn")))
        else:
            raise TimeoutError("the previous probe of the replica has not come back")
        probe = self._probe
        done, _ = await asyncio.wait({probe}, timeout=CHECK_TIMEOUT_S)
        if not done:
            probe.cancel()  # asks; the task ends whenever the server answers or the connection drops
            raise TimeoutError(f"the replica did not answer within {CHECK_TIMEOUT_S} s")
        return probe.result()

    def _choose(self, staleness_s: float, problem: str) -> None:
        self.staleness_s = staleness_s
        fresh = staleness_s <= self._max_lag_s
        if fresh != self.on_replica:
            fields: dict[str, object] = {"staleness_s": None if math.isinf(staleness_s) else round(staleness_s, 3)}
            if problem:
                fields["problem"] = problem
            logger.warning(
                "replica reads %s",
                "resume: the replica caught up" if fresh else "go to the primary: the replica is too stale",
                extra={"fields": fields},
            )
        self.on_replica = fresh


# What a read-only adapter takes: the primary's pool itself, or a ReadPool in front of it and a replica.
ReadSource = asyncpg.Pool | ReadPool
