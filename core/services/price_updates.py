"""After-commit step for stored ticks: the latest-price cache and one ``price_update`` event each.

It runs as its own task. Ingest answers as soon as PostgreSQL committed; the
ticks are queued here and written to Redis by one loop that takes everything
queued since its last write, so concurrent batches share one pipeline (and one
script per (source, symbol) pair). The queue is bounded: while Redis is down
the writes are retried with backoff, and beyond ``max_pending`` the oldest
ticks are dropped from the queue (they are safe in PostgreSQL; only their live
events are lost, and that is counted and logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from common import telemetry
from core.domain.errors import Unavailable
from core.domain.prices import Tick

logger = logging.getLogger(__name__)

MAX_PENDING = 200_000
MAX_PER_WRITE = 5_000
RETRY_S = (0.1, 0.5, 1.0, 2.0)
MAX_LINKS = 32  # a publish span links at most this many of the ingest calls whose ticks it wrote


class LatestPriceWriter(Protocol):
    """The latest-price cache and the ``prices:`` streams (``core.adapters.price_cache``): each tick replaces
    its pair's latest price if newer and is published as a ``price_update`` event. Raises ``Unavailable``
    when Redis cannot take the write (nothing of it may be assumed written)."""

    async def write(self, ticks: Sequence[Tick]) -> None: ...


class PriceUpdates:
    def __init__(self, cache: LatestPriceWriter, *, max_pending: int = MAX_PENDING) -> None:
        self._cache = cache
        self._pending: deque[Tick] = deque()
        self._max_pending = max_pending
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped = 0
        self.failures = 0
        self._callers: deque[object] = deque(maxlen=MAX_LINKS)  # span contexts of the ingest calls (traces on)

    async def __call__(self, ticks: Sequence[Tick]) -> None:
        """Queue ``ticks`` (never blocks, never raises)."""
        if not ticks:
            return
        self._pending.extend(ticks)
        if telemetry.enabled:
            self._remember_caller()
        overflow = len(self._pending) - self._max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self.dropped += overflow
            logger.warning("price updates: %d ticks dropped from a full queue (Redis too slow or down)", overflow)
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: write what is queued, coalescing everything that arrived meanwhile."""
        attempt = 0
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), MAX_PER_WRITE))]
            try:
                if telemetry.enabled:
                    await self._traced_write(batch)
                else:
                    await self._cache.write(batch)
                attempt = 0
            except Unavailable as exc:
                self.failures += 1
                self._pending.extendleft(reversed(batch))
                delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                logger.warning("price updates not written (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    @property
    def pending(self) -> int:
        """Ticks queued and not written yet."""
        return len(self._pending)

    def _remember_caller(self) -> None:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid and context.trace_flags.sampled:
            self._callers.append(context)

    async def _traced_write(self, batch: list[Tick]) -> None:
        """The write as a ``publish prices`` span linked to the ingest calls whose ticks it carries; each event
        it publishes carries the span's ``traceparent`` (``core.adapters.price_cache``), so the WebSocket
        gateway's delivery links back to it."""
        from opentelemetry import trace

        links = [trace.Link(context) for context in self._callers if isinstance(context, trace.SpanContext)]
        self._callers.clear()
        with telemetry.tracer().start_as_current_span(
            "publish prices", kind=trace.SpanKind.PRODUCER, links=links, attributes={"perseus.ticks": len(batch)}
        ):
            await self._cache.write(batch)

    async def drained(self) -> None:
        """Wait until everything queued so far has been written (tests, shutdown)."""
        await self._idle.wait()
