"""After-commit step for ingested ticks: the latest-price cache and one ``price_update`` event each."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from core.adapters.event_codec import price_channel, price_event
from core.adapters.events import Event, EventPublisher
from core.adapters.price_cache import PriceCache
from core.domain.prices import Tick


class PriceUpdates:
    def __init__(self, cache: PriceCache, publisher: EventPublisher, *, clock_ms: Callable[[], int]) -> None:
        self._cache = cache
        self._publisher = publisher
        self._clock_ms = clock_ms

    async def __call__(self, ticks: Sequence[Tick]) -> None:
        if not ticks:
            return
        await self._cache.update(ticks)
        now = self._clock_ms()
        ordered = sorted(ticks, key=lambda t: t.ts_ms)  # a channel's seq follows tick time within a batch
        await self._publisher.publish([Event(price_channel(t), price_event(t, now_ms=now)) for t in ordered])
