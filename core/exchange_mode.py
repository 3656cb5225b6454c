"""Wiring of exchange mode: one writer (lease + venue feed + candle pipeline) per configured exchange."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import redis.asyncio as aioredis

from core.adapters.candle_store import CandleStore
from core.adapters.events import EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.adapters.tick_store import TickStore
from core.adapters.venues.base import EventSink
from core.adapters.venues.sim import SimVenue
from core.adapters.writer_lock import WriterLock
from core.services.exchange_pipeline import ExchangePipeline
from core.services.exchange_writer import HEARTBEAT_TTL_MS, ExchangeWriter, Feed
from core.services.ingestion import TicksListener
from core.settings import Settings

# Venues whose own closed 1-minute candles are the candle source (their trades are stored as ticks only).
CANDLES_FROM_VENUE = frozenset({"binance", "kraken"})

VenueFactory = Callable[[EventSink], Callable[[], Awaitable[None]]]


def venue_factory(name: str, settings: Settings, clock_ms: Callable[[], int]) -> VenueFactory:
    """How to run exchange ``name``: a callable taking the sink and returning the venue's ``run``."""
    venue = settings.venues[name]
    if name == "sim":
        return lambda sink: (
            SimVenue(
                sink,
                symbols=venue.symbols,
                seed=settings.sim_seed,
                trades_per_second=settings.sim_trades_per_second,
                clock_ms=clock_ms,
            ).run
        )
    from core.adapters.venues.registry import websocket_venue

    return websocket_venue(name, venue.symbols, venue.url, clock_ms)


def build_writers(
    settings: Settings,
    *,
    redis: aioredis.Redis,
    keys: RedisKeys,
    exchange_ids: Mapping[str, int],
    ticks: TickStore,
    after_ticks: TicksListener,
    candles: CandleStore,
    publisher: EventPublisher,
    clock_ms: Callable[[], int],
) -> list[ExchangeWriter]:
    writers = []
    for name in settings.exchanges:
        lock = WriterLock(redis, keys.exchange_writer_lock(name), settings.instance_id, ttl_ms=settings.writer_lease_ms)
        start_venue = venue_factory(name, settings, clock_ms)

        def make_feed(name: str = name, lock: WriterLock = lock, start_venue: VenueFactory = start_venue) -> Feed:
            pipeline = ExchangePipeline(
                name,
                exchange_ids[name],
                ticks=ticks,
                after_ticks=after_ticks,
                candles=candles,
                publisher=publisher,
                clock_ms=clock_ms,
                may_write=lock.held,
                build_from_trades=name not in CANDLES_FROM_VENUE,
                writer_id=settings.instance_id,
            )
            return Feed(pipeline, start_venue(pipeline.deliver), settings.venues[name].symbols)

        heartbeat_key = keys.exchange_heartbeat(name)

        async def heartbeat(key: str = heartbeat_key) -> object:
            return await redis.set(key, clock_ms(), px=HEARTBEAT_TTL_MS)

        writers.append(ExchangeWriter(name, lock, make_feed, heartbeat=heartbeat))
    return writers
