"""Leadership for one exchange: stand by until the writer lease is ours, then run its feed.

At most one exchange-mode instance writes for an exchange. Each instance
loops: try to acquire the lease; while it holds it, run the venue feed and
the candle clock, renew the lease every third of its TTL and, while the venue
is connected, refresh the exchange's heartbeat (what makes it "online"); the
moment a renewal fails (or the local lease runs out, e.g. after a pause),
cancel the feed and go back to standby. A standby
polls every ``poll_s``, so it takes over within TTL + poll after a leader dies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from core.adapters.writer_fence import StaleTerm, WriterFence
from core.adapters.writer_lock import WriterLock
from core.domain.errors import LeaseLost
from core.services.exchange_pipeline import ExchangePipeline

logger = logging.getLogger(__name__)

DEFAULT_POLL_S = 1.0
CLOCK_S = 0.5
HEARTBEAT_TTL_MS = 15_000


@dataclass(frozen=True, slots=True)
class Feed:
    """What runs while leading: the venue (``run()`` until cancelled) and the pipeline it feeds."""

    pipeline: ExchangePipeline
    run_venue: Callable[[], Awaitable[None]]
    symbols: tuple[str, ...]
    connected: Callable[[], bool]  # the venue's connection is up: only then is the exchange online


class ExchangeWriter:
    def __init__(
        self,
        exchange: str,
        lock: WriterLock,
        make_feed: Callable[[], Feed],
        *,
        heartbeat: Callable[[], Awaitable[object]],
        fence: WriterFence | None = None,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        self.exchange = exchange
        self._lock = lock
        self._make_feed = make_feed
        self._heartbeat = heartbeat
        self._fence = fence
        self._poll_s = poll_s
        self.leading = False
        self.terms = 0

    async def run(self) -> None:
        """Until cancelled: stand by, lead, and stand by again when the lease is lost."""
        while True:
            _raise_if_cancelled()
            try:
                acquired = await self._lock.acquire()
            except (OSError, aioredis.RedisError) as exc:
                logger.warning("%s: cannot reach Redis for the writer lease: %s", self.exchange, exc)
                acquired = False
            if not acquired:
                await asyncio.sleep(self._poll_s)
                continue
            try:
                await self._lead()
            except Exception:  # a bug or an unexpected failure: log it, stand by, try again
                logger.exception("%s: the feed failed; standing by", self.exchange)
                await asyncio.sleep(self._poll_s)

    async def _lead(self) -> None:
        self.leading, self.terms = True, self.terms + 1
        logger.info("%s: this instance is the writer (term %d)", self.exchange, self._lock.term)
        feed = self._make_feed()
        try:
            if self._fence is not None:
                try:
                    await self._fence.claim(self._lock.term, self._lock.owner)
                except StaleTerm as stale:  # Redis lost its counter: restart the terms above PostgreSQL's
                    logger.warning("%s: %s; the next term starts above it", self.exchange, stale)
                    await self._lock.raise_term_floor(stale.current)
                    raise
            await feed.pipeline.start(feed.symbols)
            async with asyncio.TaskGroup() as group:
                group.create_task(feed.run_venue())
                group.create_task(self._clock(feed.pipeline))
                group.create_task(self._keep_lease(feed))
        except* LeaseLost:
            logger.warning("%s: writer lease lost; standing by", self.exchange)
            _raise_if_cancelled()  # a lease lost while the feed was being stopped must not swallow the stop
        finally:
            self.leading = False
            if self._lock.held():
                await _quietly(self._lock.release())

    async def _keep_lease(self, feed: Feed) -> None:
        interval = self._lock.ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await self._lock.renew()
                if renewed and feed.connected():
                    await self._heartbeat()
            except (OSError, aioredis.RedisError) as exc:
                logger.warning("%s: lease renewal failed: %s", self.exchange, exc)
                renewed = self._lock.held()
            if not renewed:
                raise LeaseLost(self.exchange)

    async def _clock(self, pipeline: ExchangePipeline) -> None:
        while True:
            await asyncio.sleep(CLOCK_S)
            try:
                await pipeline.advance()
            except LeaseLost:
                raise
            except Exception:  # storage down: keep the candles in memory and try again next tick
                logger.warning("%s: closing candles failed; will retry", self.exchange, exc_info=True)


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that a TaskGroup turned into a handled ExceptionGroup (Python 3.11):
    when a child fails while the group is being cancelled, the group raises the child's error, not
    CancelledError, and the writer would lead again instead of stopping."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _quietly(step: Awaitable[object]) -> None:
    try:
        await step
    except (OSError, aioredis.RedisError):
        pass
