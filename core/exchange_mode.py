"""Wiring of exchange mode: one writer (lease + venue feed + candle pipeline + indicators) per configured exchange."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from core.adapters.candle_store import CandleStore
from core.adapters.events import EventPublisher
from core.adapters.exchange_directory import Heartbeat
from core.adapters.redis_client import RedisClient
from core.adapters.redis_keys import RedisKeys
from core.adapters.tick_store import TickStore
from core.adapters.venues import binance, coinbase, kraken
from core.adapters.venues.base import EventSink, VenueProtocol
from core.adapters.venues.binance import BinanceProtocol
from core.adapters.venues.coinbase import CoinbaseProtocol
from core.adapters.venues.kraken import KrakenProtocol
from core.adapters.venues.runner import VenueRunner
from core.adapters.venues.sim import SimVenue
from core.adapters.writer_fence import WriterFence
from core.adapters.writer_lock import WriterLock
from core.domain.errors import LeaseLost
from core.domain.market_events import CANDLES_FROM_VENUE
from core.domain.models import VenueState
from core.domain.timeframes import Timeframe
from core.services.exchange_pipeline import ClosedListener, ExchangePipeline
from core.services.exchange_writer import HEARTBEAT_TTL_MS, ExchangeWriter, Feed
from core.services.ingestion import TicksListener
from core.settings import Settings

WEBSOCKET_VENUES: dict[str, tuple[Callable[..., VenueProtocol], str]] = {
    "coinbase": (CoinbaseProtocol, coinbase.DEFAULT_URL),
    "binance": (BinanceProtocol, binance.DEFAULT_BASE),
    "kraken": (KrakenProtocol, kraken.DEFAULT_URL),
}

VenueFactory = Callable[[EventSink], "RunningVenue"]


class RunningVenue(Protocol):
    """What exchange mode needs of a venue: run it, ask whether it is connected, its state (``GetStatus``) and
    when it last delivered a message."""

    connected: bool
    state: VenueState
    last_frame_ms: int | None

    async def run(self) -> None: ...


def venue_factory(
    name: str,
    settings: Settings,
    clock_ms: Callable[[], int],
    history_end: Callable[[str], Awaitable[int | None]] | None = None,
) -> VenueFactory:
    """How to run exchange ``name``: a callable taking the sink and returning the running venue."""
    venue = settings.venues[name]
    if name == "sim":
        return lambda sink: SimVenue(
            sink,
            symbols=venue.symbols,
            seed=settings.sim_seed,
            trades_per_second=settings.sim_trades_per_second,
            clock_ms=clock_ms,
            backfill_minutes=settings.sim_backfill_minutes,
            history_end=history_end,
        )
    protocol_class, default_url = WEBSOCKET_VENUES[name]
    url = venue.url or default_url

    return lambda sink: VenueRunner(
        lambda: protocol_class(venue.symbols, url=url), sink, clock_ms=clock_ms, propagate=(LeaseLost,)
    )


@dataclass(frozen=True, slots=True)
class Stores:
    """The shared storage every exchange's writer uses."""

    pool: asyncpg.Pool
    redis: RedisClient  # the lease and the heartbeat: single commands and scripts
    keys: RedisKeys
    exchange_ids: Mapping[str, int]
    ticks: TickStore
    after_ticks: TicksListener
    candles: CandleStore
    publisher: EventPublisher
    on_closed: ClosedListener | None = None  # the indicators, told of each stored wave of closed candles
    feed_counts: collections.Counter[tuple[str, str]] | None = None  # perseus_ingested_feeds_total, venue trades


def build_writers(settings: Settings, stores: Stores, clock_ms: Callable[[], int]) -> list[ExchangeWriter]:
    return [_writer(name, settings, stores, clock_ms) for name in settings.exchanges]


def _writer(name: str, settings: Settings, stores: Stores, clock_ms: Callable[[], int]) -> ExchangeWriter:
    exchange_id = stores.exchange_ids[name]
    lock = WriterLock(
        stores.redis,
        stores.keys.exchange_writer_lock(name),
        stores.keys.exchange_writer_term(name),
        settings.instance_id,
        ttl_ms=settings.writer_lease_ms,
    )
    fence = WriterFence(stores.pool, exchange_id)

    async def history_end(symbol: str) -> int | None:
        """Where the stored 1m history of ``symbol`` ends (the simulated exchange backfills from there)."""
        last = (await stores.candles.last_closed(exchange_id, symbol)).get(Timeframe.M1)
        return None if last is None else last[0] + Timeframe.M1.ms

    start_venue = venue_factory(name, settings, clock_ms, history_end)

    def make_feed() -> Feed:
        pipeline = ExchangePipeline(
            name,
            exchange_id,
            ticks=stores.ticks,
            after_ticks=stores.after_ticks,
            candles=stores.candles,
            publisher=stores.publisher,
            clock_ms=clock_ms,
            may_write=lock.held,
            build_from_trades=name not in CANDLES_FROM_VENUE,
            writer_id=settings.instance_id,
            fence=fence,
            term=lambda: lock.term,
            on_closed=stores.on_closed,
            feed_counts=stores.feed_counts,
        )
        running = start_venue(pipeline.deliver)
        return Feed(
            pipeline,
            running.run,
            settings.venues[name].symbols,
            lambda: running.connected,
            status=lambda: (running.state, running.last_frame_ms),
        )

    heartbeat = Heartbeat(stores.redis, stores.keys, name, clock_ms=clock_ms, ttl_ms=HEARTBEAT_TTL_MS)
    return ExchangeWriter(name, lock, make_feed, heartbeat=heartbeat, fence=fence)
