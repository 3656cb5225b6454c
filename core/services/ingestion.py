"""Ingestion of price-feed batches: validate each feed, commit, then cache and publish; candles follow.

Order matters: a feed is acknowledged only after PostgreSQL committed it.
What follows the commit (the latest-price cache, ``price_update`` events)
never fails the call: the ticks are safe, and a Redis outage only delays
what readers see, which is logged and counted. Candles are not built here:
the new ticks of a source whose candles come from trades are queued in the
insert itself, and the writer leading that source takes them, on whichever
core it runs (:mod:`core.services.exchange_pipeline`).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.domain.errors import FailedPrecondition, InvalidArgument, Unavailable
from core.domain.market_events import CANDLES_FROM_VENUE
from core.domain.prices import MAX_BATCH, FeedError, RawFeed, Tick, validate_batch

logger = logging.getLogger(__name__)


class TickWriter(Protocol):
    async def insert(
        self,
        ticks: Sequence[tuple[int, Tick]],
        *,
        worker_id: str,
        batch_id: str,
        deadline_ms: int | None = None,
        to_candles: frozenset[str] = frozenset(),
    ) -> set[int]: ...


TicksListener = Callable[[Sequence[Tick]], Awaitable[None]]

# the status label of perseus_ingested_feeds_total
STORED, DUPLICATE, REJECTED, FAILED = "stored", "duplicate", "rejected", "failed"
OTHER_SOURCE = "other"


class SymbolRegistry(Protocol):
    async def register_symbols(self, exchange_id: int, symbols: Sequence[str]) -> None: ...


class ListNewSymbols:
    """After-commit listener: a symbol a known source's new ticks carry becomes one ListSymbols lists (so REST
    and the WS gateway's channel check know it), registered once per process and source."""

    MAX_REMEMBERED = 100_000  # pairs known to be registered; past it the set starts again (registering is idempotent)

    def __init__(self, registry: SymbolRegistry, exchange_ids: Mapping[str, int]) -> None:
        self._registry = registry
        self._exchange_ids = exchange_ids
        self._registered: set[tuple[str, str]] = set()

    async def __call__(self, ticks: Sequence[Tick]) -> None:
        new: dict[str, set[str]] = {}
        for tick in ticks:
            if (tick.source, tick.symbol) not in self._registered and tick.source in self._exchange_ids:
                new.setdefault(tick.source, set()).add(tick.symbol)
        if len(self._registered) > self.MAX_REMEMBERED:
            self._registered.clear()
        for source, symbols in new.items():
            await self._registry.register_symbols(self._exchange_ids[source], sorted(symbols))
            self._registered.update((source, symbol) for symbol in symbols)


@dataclass(frozen=True, slots=True)
class IngestResult:
    ingested: int
    errors: list[FeedError] = field(default_factory=list)
    newly_stored: int = 0

    @property
    def failed(self) -> int:
        return len(self.errors)


class Ingestion:
    def __init__(
        self,
        store: TickWriter,
        *,
        known_sources: frozenset[str],
        candle_sources: frozenset[str] | None = None,
        listeners: Sequence[TicksListener] = (),
        clock_ms: Callable[[], int],
        read_only: bool = False,
    ) -> None:
        self._store = store
        self._known_sources = known_sources
        # the sources whose candles are built from trades (by default every known one but those whose candles
        # are the venue's klines): their new ticks are queued, with the insert, for the candles of the writer
        # leading the source, on whichever core (docs/design/ingestion.md)
        self._candle_sources = known_sources - CANDLES_FROM_VENUE if candle_sources is None else candle_sources
        self._listeners = list(listeners)
        self._clock_ms = clock_ms
        self._read_only = read_only
        self.listener_failures = 0
        # feeds by (source, status) for /metrics: stored, duplicate (stored before: a retry), rejected (a bad
        # feed; its source is "other" when not a known one, so a client cannot grow the label set), failed (the
        # store did not take the batch)
        self.feeds: collections.Counter[tuple[str, str]] = collections.Counter()

    async def ingest(
        self, feeds: Sequence[RawFeed], *, worker_id: str = "", batch_id: str = "", timeout_s: float | None = None
    ) -> IngestResult:
        """Validate and store one batch; ``timeout_s`` is what is left of the caller's deadline.

        Past that deadline nothing is started, and the store is told the
        deadline (as wall-clock epoch ms, which PostgreSQL compares with its own
        clock) so a stall cannot turn into a commit the caller no longer waits
        for. A commit can still race the deadline by the last milliseconds: the
        caller then sees a failure for a stored batch, which a retry makes
        whole, a batch being idempotent.
        """
        deadline_ms = None if timeout_s is None else time.time_ns() // 1_000_000 + int(timeout_s * 1000)
        if self._read_only:
            raise FailedPrecondition(
                "this instance runs in pw-host mode (read-only): send ingest to an exchange-mode instance"
            )
        if not feeds:
            raise InvalidArgument("the batch is empty")
        if len(feeds) > MAX_BATCH:
            raise InvalidArgument(f"the batch has {len(feeds)} feeds; at most {MAX_BATCH} are accepted per call")
        good, errors = validate_batch(feeds, now_ms=self._clock_ms(), known_sources=self._known_sources)
        for error in errors:
            source = feeds[error.index].source
            self.feeds[source if source in self._known_sources else OTHER_SOURCE, REJECTED] += 1
        try:
            if deadline_ms is not None and time.time_ns() // 1_000_000 >= deadline_ms:
                raise Unavailable("the call's deadline passed before the batch was stored; nothing was stored")
            stored = await self._store.insert(
                good, worker_id=worker_id, batch_id=batch_id, deadline_ms=deadline_ms, to_candles=self._candle_sources
            )
        except BaseException:
            for _, tick in good:
                self.feeds[tick.source, FAILED] += 1
            raise
        fresh = [tick for index, tick in good if index in stored]  # a retry republishes nothing
        for index, tick in good:
            self.feeds[tick.source, STORED if index in stored else DUPLICATE] += 1
        for listener in self._listeners:
            try:
                await listener(fresh)
            except Exception:  # the ticks are committed; a listener failing must not fail the call
                self.listener_failures += 1
                logger.warning("after-commit step failed for %d ticks", len(fresh), exc_info=True)
        return IngestResult(ingested=len(good), errors=errors, newly_stored=len(fresh))
