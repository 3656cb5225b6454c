"""One exchange's market events become stored ticks, closed candles and published events.

Candles are built from trades (``sim``, Coinbase) or taken from the venue's
closed 1-minute candles (Binance, Kraken), never both, so no trade is counted
twice. A trade feeds the candles only once PostgreSQL has stored it as new:
the snapshot a venue replays on reconnect therefore changes nothing.

A new pipeline (a writer that starts, restarts or takes over) first rebuilds
every candle in progress, in every timeframe, from storage (:meth:`start`):
the stored 1m candles for the minutes already closed and, when candles come
from trades, the stored ticks aggregated per minute in PostgreSQL for the
minutes after them. So the candles it closes hold what the writer before it
had stored, and the minutes that writer never closed come out from its ticks.

Ticks ingested through ``IngestService`` on any core (not only this one) reach
the candles through ``candle_inbox``: stored there with the tick, taken by the
writer in a fenced transaction on every clock tick (:meth:`advance`) and when
a symbol's candles are rebuilt, which leaves out the ticks still waiting
there, so each is counted once (docs/design/ingestion.md).

Every write first asks ``may_write()`` (the local view of the writer lease),
then runs in a transaction fenced by the lease's term (``fence``): an instance
that lost the lease, even one that was paused with a write on its way, raises
:class:`LeaseLost` instead of writing.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from core.domain.candles import Aggregate, Candle, CandleBuilder
from core.domain.errors import LeaseLost
from core.domain.market_events import ExchangeCandle, MarketEvent, SequenceGap, Trade
from core.domain.prices import Tick
from core.domain.timeframes import Timeframe
from core.services.ingestion import DUPLICATE, STORED, TicksListener
from core.services.ports import Connection, Fenced

logger = logging.getLogger(__name__)

MAX_PENDING_CANDLES = 50_000  # closed candles kept while storage is down (about 8 h of 100 symbols x 6 timeframes)

# Told of each wave of closed candles once they are stored and published, with the pipeline's fenced writes.
ClosedListener = Callable[[Sequence[Candle], Fenced], Awaitable[None]]


class FencedTicks(Protocol):
    """The tick store (``core.adapters.tick_store``); raises ``Unavailable`` when PostgreSQL cannot store."""

    async def insert(
        self, ticks: Sequence[tuple[int, Tick]], *, worker_id: str, batch_id: str, conn: Connection = None
    ) -> set[int]:
        """Store ``(index, tick)`` pairs (within ``conn``'s transaction when given); the indexes newly stored."""
        ...


class CandleStorage(Protocol):
    """Closed candles: the full history in PostgreSQL and the recent windows in Redis
    (``core.adapters.candle_store``). Every method raises ``Unavailable`` when its store cannot answer."""

    async def register_symbols(self, exchange_id: int, symbols: Sequence[str], *, conn: Connection = None) -> None: ...

    async def last_closed(self, exchange_id: int, symbol: str) -> dict[Timeframe, tuple[int, Decimal]]:
        """Open time (ms) and close of the newest stored candle per timeframe."""
        ...

    async def stored_minutes(
        self, exchange_id: int, symbol: str, since_ms: int, until_ms: int | None = None
    ) -> list[Aggregate]:
        """The stored 1m candles with data from ``since_ms`` (to ``until_ms``), oldest first."""
        ...

    async def tick_minutes(self, source: str, symbol: str, since_ms: int) -> list[Aggregate]:
        """The stored ticks of ``source`` and ``symbol`` from ``since_ms`` on, one aggregate per minute."""
        ...

    async def inbox_symbols(self, source: str) -> set[str]:
        """The symbols with ingested ticks of ``source`` waiting for their candles."""
        ...

    async def take_inbox(
        self, source: str, symbols: Sequence[str], *, conn: Connection = None
    ) -> list[tuple[str, Decimal, Decimal, int]]:
        """Take (delete, within ``conn``'s transaction) the ingested ticks waiting for ``symbols``' candles:
        ``(symbol, price, volume, ts_ms)``, oldest first."""
        ...

    async def insert(self, exchange_id: int, candles: Sequence[Candle], *, conn: Connection = None) -> None: ...

    async def add_to_windows(self, exchange_id: int, candles: Sequence[Candle]) -> None: ...


class CandlePublisher(Protocol):
    """Publishes ``candle_close`` events (``core.adapters.events``); raises ``Unavailable``."""

    async def publish_candles(self, exchange_id: int, candles: Sequence[Candle]) -> None: ...


class Fence(Protocol):
    """The writer fence (``core.adapters.writer_fence``): a transaction in which ``term`` stays the writer's,
    raising ``LeaseLost`` when it is not (and ``Unavailable`` when PostgreSQL cannot answer)."""

    def transaction(self, term: int) -> AbstractAsyncContextManager[Connection]: ...


@dataclass(slots=True)
class PipelineStats:
    trades: int = 0
    ingested: int = 0  # ingested ticks taken into the candles
    duplicate_trades: int = 0
    late: int = 0
    gaps: int = 0
    candles_closed: int = 0


class ExchangePipeline:
    def __init__(
        self,
        exchange: str,
        exchange_id: int,
        *,
        ticks: FencedTicks,
        after_ticks: TicksListener,
        candles: CandleStorage,
        publisher: CandlePublisher,
        clock_ms: Callable[[], int],
        may_write: Callable[[], bool],
        build_from_trades: bool,
        writer_id: str = "",
        fence: Fence | None = None,
        term: Callable[[], int] = lambda: 0,
        on_closed: ClosedListener | None = None,
        feed_counts: collections.Counter[tuple[str, str]] | None = None,
    ) -> None:
        self.exchange = exchange
        # perseus_ingested_feeds_total: the venue's trades by (source, status), beside the ingested feeds
        self._feed_counts = feed_counts if feed_counts is not None else collections.Counter()
        self._worker_id = f"venue:{exchange}@{writer_id}" if writer_id else f"venue:{exchange}"
        self._exchange_id = exchange_id
        self._ticks = ticks
        self._after_ticks = after_ticks
        self._candles = candles
        self._publisher = publisher
        self._clock_ms = clock_ms
        self._may_write = may_write
        self._from_trades = build_from_trades
        self._builders: dict[str, CandleBuilder] = {}
        self._storing_since: int | None = None  # earliest timestamp of the trades being stored right now
        self._pending: list[Candle] = []
        self._fence = fence
        self._term = term
        self._on_closed = on_closed
        self.stats = PipelineStats()

    async def start(self, symbols: Sequence[str]) -> None:
        """Before the feed runs: register its symbols (the exchange's symbol list comes from what it carries),
        then rebuild their candles in progress from storage and store what that closes, before any new data."""
        async with self._fenced() as conn:
            await self._candles.register_symbols(self._exchange_id, symbols, conn=conn)
        await self._persist(await self._restore(symbols))

    async def _restore(self, symbols: Iterable[str]) -> list[Candle]:
        """A builder for each new symbol, rebuilt from storage (see :meth:`CandleBuilder.restore`); returns
        the candles that closes, with those the clock closes, not yet stored.

        It must run before any new data of the symbol is stored, or that data would count twice. A symbol
        whose rebuild fails gets no builder (the next event rebuilds it again, from the same storage); the
        candles closed for the symbols rebuilt before it are kept for the next store.
        """
        closed: list[Candle] = []
        try:
            for symbol in dict.fromkeys(s for s in symbols if s not in self._builders):
                closed += await self._restore_one(symbol)
        except BaseException:
            self._keep(closed)
            raise
        return closed

    async def _restore_one(self, symbol: str) -> list[Candle]:
        builder = CandleBuilder(self.exchange, symbol)
        history = await self._candles.last_closed(self._exchange_id, symbol)
        since, ticks_since = builder.restore_window(history, self._clock_ms())
        if self._from_trades:
            minutes = await self._candles.stored_minutes(self._exchange_id, symbol, since, ticks_since)
            # the stored ticks but those still waiting in candle_inbox, which are taken right below
            minutes += await self._candles.tick_minutes(self.exchange, symbol, ticks_since)
        else:  # the venue's 1m candles are the source: the stored ones are all there is
            minutes = await self._candles.stored_minutes(self._exchange_id, symbol, since)
        closed = builder.restore(history, minutes)
        # the ingested ticks the rebuild left out, before the clock closes anything; if taking them fails, the
        # builder is dropped: they stay waiting, and the next rebuild leaves them out again
        taken = await self._take(symbol) if self._from_trades else []
        self._builders[symbol] = builder
        closed += self._add_ingested(taken)
        return closed + builder.advance(self._clock_ms())

    async def _take(self, *symbols: str) -> list[tuple[str, Decimal, Decimal, int]]:
        """The ingested ticks waiting for ``symbols``, taken (deleted) in a fenced transaction: only the
        current writer takes them, and a writer that lost its term leaves them to the next."""
        async with self._fenced() as conn:
            return await self._candles.take_inbox(self.exchange, symbols, conn=conn)

    def _add_ingested(self, taken: Sequence[tuple[str, Decimal, Decimal, int]]) -> list[Candle]:
        closed: list[Candle] = []
        for symbol, price, volume, ts_ms in taken:
            update = self._builders[symbol].add_tick(price, volume, ts_ms)
            self.stats.late += bool(update.late)
            closed += update.closed
        self.stats.ingested += len(taken)
        return closed

    async def deliver(self, events: Sequence[MarketEvent]) -> None:
        """The venue's sink: like :meth:`on_events`, but a storage failure is logged, not raised
        (the venue keeps reading); only a lost lease goes up."""
        try:
            await self.on_events(events)
        except LeaseLost:
            raise
        except Exception:
            logger.warning("%s: %d events not processed", self.exchange, len(events), exc_info=True)

    async def on_events(self, events: Sequence[MarketEvent]) -> None:
        self._check_lease()
        trades = sorted((e for e in events if isinstance(e, Trade)), key=lambda t: t.ts_ms)
        closed = await self._restore(e.symbol for e in events if isinstance(e, (Trade, ExchangeCandle)))
        if trades:
            try:
                closed += await self._on_trades(trades)
            except BaseException:  # what the rebuild closed is kept for the next store
                self._keep(closed)
                raise
        for event in events:
            if isinstance(event, ExchangeCandle) and event.closed and not self._from_trades:
                update = self._builders[event.symbol].add_minute(
                    event.open_time_ms, event.open, event.high, event.low, event.close, event.volume
                )
                self.stats.late += bool(update.late)
                closed += update.closed
            elif isinstance(event, SequenceGap):
                self.stats.gaps += 1
                logger.warning(
                    "sequence gap",
                    extra={
                        "fields": {
                            "exchange": self.exchange,
                            "symbol": event.symbol,
                            "lost": event.received - event.expected,
                        }
                    },
                )
        await self._persist(closed)

    async def _on_trades(self, trades: Sequence[Trade]) -> list[Candle]:
        """Store the trades as ticks, then feed the new ones to the candles. While they are being stored
        (``_storing_since``), the clock closes no candle they belong to: a slow insert does not make them late."""
        ticks = [
            (i, Tick(t.symbol, t.price, t.size, self.exchange, t.ts_ms, trade_id=t.trade_id))
            for i, t in enumerate(trades)
        ]
        self._storing_since = trades[0].ts_ms
        try:
            async with self._fenced() as conn:
                stored = await self._ticks.insert(ticks, worker_id=self._worker_id, batch_id="", conn=conn)
            fresh = [tick for i, tick in ticks if i in stored]
            self.stats.trades += len(fresh)
            self.stats.duplicate_trades += len(ticks) - len(fresh)
            self._feed_counts[self.exchange, STORED] += len(fresh)
            self._feed_counts[self.exchange, DUPLICATE] += len(ticks) - len(fresh)
            await self._after_ticks(fresh)
            closed: list[Candle] = []
            if self._from_trades:
                for tick in fresh:
                    update = self._builders[tick.symbol].add_tick(tick.price, tick.volume, tick.ts_ms)
                    self.stats.late += bool(update.late)
                    closed += update.closed
        finally:
            self._storing_since = None
        return closed

    async def advance(self) -> None:
        """Take the ingested ticks waiting for the candles, then close what the clock says is over (called
        about once a second), but nothing that trades being stored at this moment belong to."""
        now = self._clock_ms()
        closed: list[Candle] = []
        if self._from_trades:
            # a symbol seen first in ingested ticks is rebuilt first (which takes its waiting ticks too)
            waiting = sorted(await self._candles.inbox_symbols(self.exchange))
            if waiting:
                closed += await self._restore(waiting)
                try:
                    closed += self._add_ingested(await self._take(*waiting))
                except BaseException:
                    self._keep(closed)
                    raise
        if self._storing_since is not None:
            now = min(now, self._storing_since)
        await self._persist(closed + [c for b in self._builders.values() for c in b.advance(now)])

    def _keep(self, closed: list[Candle]) -> None:
        """Closed candles not stored yet (a failure came first): stored with the next ones (bounded)."""
        self._pending = (self._pending + closed)[-MAX_PENDING_CANDLES:]

    async def _persist(self, closed: list[Candle]) -> None:
        """Store and publish closed candles; on failure keep them (bounded) for the next attempt."""
        batch = self._pending + closed
        if not batch:
            return
        try:
            async with self._fenced() as conn:
                await self._candles.insert(self._exchange_id, batch, conn=conn)
            await self._candles.add_to_windows(self._exchange_id, batch)
            await self._publisher.publish_candles(self._exchange_id, batch)
        except BaseException:
            self._pending = batch[-MAX_PENDING_CANDLES:]
            raise
        self._pending = []
        self.stats.candles_closed += len(batch)
        if self._on_closed is not None:
            self._check_lease()
            await self._on_closed(batch, self._fenced)

    @asynccontextmanager
    async def _fenced(self) -> AsyncIterator[Connection]:
        """Where a write goes: a transaction fenced by this writer's term (None: no fence, plain pool)."""
        self._check_lease()
        if self._fence is None:
            yield None
            return
        async with self._fence.transaction(self._term()) as conn:
            yield conn

    def _check_lease(self) -> None:
        if not self._may_write():
            raise LeaseLost(f"{self.exchange}: the writer lease is not held; not writing")
