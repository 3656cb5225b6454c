"""The core's ``/metrics`` families for what seed 004 names, read from the services at scrape time.

- ``perseus_ingested_feeds_total{source,status}``: every feed of an ingest batch, by its source and what became
  of it (``stored``, ``duplicate``, ``rejected``, ``failed``); seed 004's ``price_ingestions_total``.
- ``perseus_cache_requests_total{cache,result}``: reads of the core's caches, ``hit`` or ``miss``
  (``latest_prices``: the latest-price cache in Redis, per symbol; ``candles``: the hot candle answers).
- ``perseus_price_updates_dropped_total`` and ``perseus_price_updates_pending``: ticks dropped from the bounded
  price-update queue (Redis too slow or down; the ticks stay in PostgreSQL, only their live events are lost)
  and the ticks waiting in it.
- ``perseus_venue_connected{exchange}``: 1 while the exchange's venue feed is connected here.

Counters read counts the services keep (plain integers, no locking on the event loop) and are exposed as
counter families, so their ``# TYPE`` is ``counter`` and rates work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.domain.models import VenueHealth

HIT, MISS = "hit", "miss"


@dataclass(frozen=True, slots=True)
class PipelineSources:
    """Where the counts live: each a callable read at scrape time."""

    feeds: Callable[[], Mapping[tuple[str, str], int]]
    caches: Mapping[str, Callable[[], tuple[int, int]]]  # cache name -> (hits, misses)
    dropped: Callable[[], int]
    pending: Callable[[], int]
    venues: Callable[[], Sequence[VenueHealth]]


class PipelineMetrics(Collector):
    def __init__(self, sources: PipelineSources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        src = self._sources
        feeds = CounterMetricFamily(
            "perseus_ingested_feeds", "Ingested price feeds by source and outcome", labels=["source", "status"]
        )
        for (source, status), count in sorted(dict(src.feeds()).items()):
            feeds.add_metric([source, status], count)
        yield feeds
        caches = CounterMetricFamily(
            "perseus_cache_requests", "Reads of a cache by result: hit or miss", labels=["cache", "result"]
        )
        for name, read in sorted(src.caches.items()):
            hits, misses = read()
            caches.add_metric([name, HIT], hits)
            caches.add_metric([name, MISS], misses)
        yield caches
        yield CounterMetricFamily(
            "perseus_price_updates_dropped",
            "Ticks dropped from the full price-update queue (stored, but no live update or latest price)",
            value=src.dropped(),
        )
        yield GaugeMetricFamily(
            "perseus_price_updates_pending", "Ticks waiting to update the latest prices", value=src.pending()
        )
        venues = GaugeMetricFamily(
            "perseus_venue_connected", "1 while the exchange's venue feed is connected here", labels=["exchange"]
        )
        for venue in src.venues():
            venues.add_metric([venue.exchange], 1 if venue.state == "connected" else 0)
        yield venues
