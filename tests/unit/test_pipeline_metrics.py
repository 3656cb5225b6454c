"""The core's seed-004 families as a scrape renders them: types, names and label sets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.domain.models import VenueHealth
from core.domain.prices import Tick
from core.pipeline_metrics import PipelineMetrics, PipelineSources
from core.services.price_updates import PriceUpdates


class Cache:
    async def write(self, ticks: Sequence[Tick]) -> None:
        pass


def tick(n: int) -> Tick:
    return Tick("BTC-USD", Decimal(n), Decimal(1), "sim", 1_700_000_000_000 + n)


def scrape(sources: PipelineSources) -> tuple[dict[str, str], dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    registry = CollectorRegistry()
    registry.register(PipelineMetrics(sources))
    types, samples = {}, {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return types, samples


async def test_ticks_dropped_from_a_full_queue_are_a_counter_and_the_queue_a_gauge() -> None:
    updates = PriceUpdates(Cache(), max_pending=2)
    await updates([tick(n) for n in range(5)])  # nothing runs the writer: 3 of 5 are dropped
    feeds: Counter[tuple[str, str]] = Counter({("sim", "stored"): 4, ("other", "rejected"): 1})
    types, samples = scrape(
        PipelineSources(
            feeds=lambda: feeds,
            caches={"latest_prices": lambda: (7, 2)},
            dropped=lambda: updates.dropped,
            pending=lambda: updates.pending,
            venues=lambda: [VenueHealth("sim", "connected", 1), VenueHealth("kraken", "reconnecting")],
        )
    )
    assert types["perseus_price_updates_dropped"] == "counter"
    assert samples["perseus_price_updates_dropped_total", ()] == 3
    assert (types["perseus_price_updates_pending"], samples["perseus_price_updates_pending", ()]) == ("gauge", 2)
    assert types["perseus_ingested_feeds"] == "counter"
    assert samples["perseus_ingested_feeds_total", (("source", "sim"), ("status", "stored"))] == 4
    assert samples["perseus_ingested_feeds_total", (("source", "other"), ("status", "rejected"))] == 1
    assert samples["perseus_cache_requests_total", (("cache", "latest_prices"), ("result", "hit"))] == 7
    assert samples["perseus_cache_requests_total", (("cache", "latest_prices"), ("result", "miss"))] == 2
    assert samples["perseus_venue_connected", (("exchange", "sim"),)] == 1
    assert samples["perseus_venue_connected", (("exchange", "kraken"),)] == 0
