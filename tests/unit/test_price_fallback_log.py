"""A Redis outage under load says the latest-price fallback once every few seconds, not once per request."""

from __future__ import annotations

import logging

import pytest

from core.services.price_queries import PriceQueries
from tests.unit.test_price_queries import NOW, FakeCache, FakeHistory, tick


async def test_the_fallback_is_said_once_per_interval_with_how_many_reads_it_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    history = FakeHistory([tick("A-USD", "kraken", "1.0", NOW - 300)])
    queries = PriceQueries(FakeCache([], broken=True), history, clock_ms=lambda: NOW)
    with caplog.at_level(logging.WARNING, logger="core.services.price_queries"):
        for _ in range(50):
            assert [q.source for q in await queries.latest(["A-USD"])] == ["kraken"]
    lines = [r.getMessage() for r in caplog.records if "latest-price cache unreadable" in r.getMessage()]
    assert len(lines) == 1 and "(1 reads since the last such line)" in lines[0], lines
