"""Wiring of exchange mode: one writer (lease + venue feed + candle pipeline) per configured exchange."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import redis.asyncio as aioredis

from core.adapters.candle_store import CandleStore
from core.adapters.events import EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.adapters.tick_store import TickStore
from core.adapters.venues import binance, coinbase, kraken
from core.adapters.venues.base import EventSink, VenueProtocol
from core.adapters.venues.binance import BinanceProtocol
from core.adapters.venues.coinbase import CoinbaseProtocol
from core.adapters.venues.kraken import KrakenProtocol
from core.adapters.venues.runner import VenueRunner
from core.adapters.venues.sim import SimVenue
from core.adapters.writer_lock import WriterLock
from core.services.exchange_pipeline import ExchangePipeline, LeaseLost
from core.services.exchange_writer import HEARTBEAT_TTL_MS, ExchangeWriter, Feed
from core.services.ingestion import TicksListener
from core.settings import Settings

# Venues whose own closed 1-minute candles are the candle source (their trades are stored as ticks only).
CANDLES_FROM_VENUE = frozenset({"binance", "kraken"})

WEBSOCKET_VENUES: dict[str, tuple[Callable[..., VenueProtocol], str]] = {
    "coinbase": (CoinbaseProtocol, coinbase.DEFAULT_URL),
    "binance": (BinanceProtocol, binance.DEFAULT_BASE),
    "kraken": (KrakenProtocol, kraken.DEFAULT_URL),
}

VenueFactory = Callable[[EventSink], "RunningVenue"]


class RunningVenue(Protocol):
    """What exchange mode needs of a venue: run it, and ask whether it is connected."""

    connected: bool

    async def run(self) -> None: ...


def venue_factory(name: str, settings: Settings, clock_ms: Callable[[], int]) -> VenueFactory:
    """How to run exchange ``name``: a callable taking the sink and returning the venue's ``run``."""
    venue = settings.venues[name]
    if name == "sim":
        return lambda sink: SimVenue(
            sink,
            symbols=venue.symbols,
            seed=settings.sim_seed,
            trades_per_second=settings.sim_trades_per_second,
            clock_ms=clock_ms,
        )
    protocol_class, default_url = WEBSOCKET_VENUES[name]
    url = venue.url or default_url

    return lambda sink: VenueRunner(
        lambda: protocol_class(venue.symbols, url=url), sink, clock_ms=clock_ms, propagate=(LeaseLost,)
    )


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
            running = start_venue(pipeline.deliver)
            return Feed(pipeline, running.run, settings.venues[name].symbols, lambda: running.connected)

        heartbeat_key = keys.exchange_heartbeat(name)

        async def heartbeat(key: str = heartbeat_key) -> object:
            return await redis.set(key, clock_ms(), px=HEARTBEAT_TTL_MS)

        writers.append(ExchangeWriter(name, lock, make_feed, heartbeat=heartbeat))
    return writers
