"""The metrics seed 004 names (issue 17), on the ``/metrics`` pages of a real core, REST and WS gateway.

- ``perseus_ingested_feeds_total{source,status}``: each feed of a REST ingest batch, counted in the core;
- ``perseus_ws_connections``: open WebSocket connections (a gauge), and the WS counts that only grow typed as
  counters (``_total``), the fan-out lag as a summary;
- ``perseus_cache_requests_total{cache,result}``: hits and misses by cache;
- ``perseus_price_updates_dropped_total``: ticks dropped from the price-update queue;
- process and GC collectors on every process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from tests.support.processes import Process, free_port, run_cli, running_core, running_gateway

pytestmark = pytest.mark.integration

WAIT_S = 15.0


@dataclass(frozen=True, slots=True)
class Stack:
    core_metrics: str
    rest: Process
    ws: Process
    key: str


@dataclass(frozen=True, slots=True)
class Page:
    types: dict[str, str]  # family name -> its # TYPE
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(url: str) -> Page:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, url
    types: dict[str, str] = {}
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return Page(types, samples)


def until(read: object, check: object, what: str) -> Page:
    deadline = time.monotonic() + WAIT_S
    while True:
        page = read()  # type: ignore[operator]
        if check(page):  # type: ignore[operator]
            return page  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(migrated_env: dict[str, str]) -> Iterator[Stack]:
    created = run_cli(["keys", "create", "--tier", "internal"], migrated_env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    metrics_addr = f"127.0.0.1:{free_port()}"
    with (
        running_core(
            migrated_env,
            PERSEUS_CORE_METRICS_ADDR=metrics_addr,
            PERSEUS_EXCHANGES="sim",
            PERSEUS_SIM_TRADES_PER_S="20",
        ) as core,
        running_gateway("rest", migrated_env, core.addr) as rest,
        running_gateway("ws", migrated_env, core.addr) as ws,
    ):
        yield Stack(f"http://{metrics_addr}/metrics", rest, ws, key)


def metrics_url(process: Process) -> str:
    return f"http://{process.addr}/metrics"


def ingest(stack: Stack, feeds: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(
        f"http://{stack.rest.addr}/internal/v1/ingest",
        headers={"X-API-Key": stack.key},
        json={"worker_id": "metrics-test", "batch_id": f"m-{time.time_ns()}", "feeds": feeds},
        timeout=5,
    )


def feed(symbol: str, price: str, source: str, offset_s: float) -> dict[str, object]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - offset_s)) + ".000Z"
    return {"symbol": symbol, "price": price, "volume": "1.5", "source": source, "timestamp": stamp}


def test_every_process_has_the_process_and_gc_collectors(stack: Stack) -> None:
    for url in (stack.core_metrics, metrics_url(stack.rest), metrics_url(stack.ws)):
        page = scrape(url)
        assert page.types.get("process_cpu_seconds") == "counter", url
        assert page.types.get("process_resident_memory_bytes") == "gauge", url
        assert page.types.get("python_gc_collections") == "counter", url
        assert page.value("python_gc_collections_total", generation="0") > 0, url


def test_ingested_feeds_are_counted_by_source_and_status(stack: Stack) -> None:
    symbol = f"MET{time.time_ns() % 100_000}-USD"
    feeds = [
        feed(symbol, "10.5", "coinbase", 3),
        feed(symbol, "10.6", "coinbase", 2),
        feed(symbol, "10.7", "kraken", 2),
        feed(symbol, "not a price", "coinbase", 1),
        feed(symbol, "10.8", "made-up-venue", 1),
    ]
    before = scrape(stack.core_metrics)
    assert before.types["perseus_ingested_feeds"] == "counter"
    first = ingest(stack, feeds)
    assert first.status_code == 200, first.text
    assert first.json()["data"]["ingested"] == 3
    retried = ingest(stack, feeds[:2])  # the same feeds again: already stored
    assert retried.status_code == 200, retried.text
    after = scrape(stack.core_metrics)

    def delta(source: str, status: str) -> float:
        name = "perseus_ingested_feeds_total"
        return after.value(name, source=source, status=status) - before.value(name, source=source, status=status)

    assert delta("coinbase", "stored") == 2
    assert delta("kraken", "stored") == 1
    assert delta("coinbase", "duplicate") == 2
    assert delta("coinbase", "rejected") == 1
    assert delta("other", "rejected") == 1  # an unknown source never becomes a label value
    assert not any(dict(labels).get("source") == "made-up-venue" for _, labels in after.samples)


def test_a_venues_trades_are_counted_as_its_source(stack: Stack) -> None:
    # the sim venue trades 20 times a second here: its stored ticks count as source="sim", like ingested feeds
    until(
        lambda: scrape(stack.core_metrics),
        lambda p: p.value("perseus_ingested_feeds_total", source="sim", status="stored") >= 20,
        "the sim venue's trades counted",
    )


def test_latest_price_reads_count_cache_hits_and_misses(stack: Stack) -> None:
    symbol = f"HIT{time.time_ns() % 100_000}-USD"
    assert ingest(stack, [feed(symbol, "3.25", "coinbase", 1)]).status_code == 200
    name = "perseus_cache_requests_total"
    before = scrape(stack.core_metrics)
    assert before.types["perseus_cache_requests"] == "counter"
    url = f"http://{stack.rest.addr}/public/v1/prices/latest"

    def read_then_scrape() -> Page:
        httpx.get(url, params={"symbols": symbol}, headers={"X-API-Key": stack.key}, timeout=5)
        return scrape(stack.core_metrics)

    # the latest price reaches the cache after the commit (the price-update queue): read until it is there
    until(
        read_then_scrape,
        lambda page: (
            page.value(name, cache="latest_prices", result="hit")
            > before.value(name, cache="latest_prices", result="hit")
        ),
        "a latest-price read answered by the cache",
    )
    misses = scrape(stack.core_metrics).value(name, cache="latest_prices", result="miss")
    unknown = httpx.get(url, params={"symbols": "NOPE-USD"}, headers={"X-API-Key": stack.key}, timeout=5)
    assert unknown.status_code in (200, 404), unknown.text
    assert scrape(stack.core_metrics).value(name, cache="latest_prices", result="miss") == misses + 1
    page = scrape(stack.core_metrics)
    assert ("perseus_cache_requests_total", (("cache", "candles"), ("result", "hit"))) in page.samples


def test_health_cache_hits_are_counted_in_the_gateways(stack: Stack) -> None:
    for gateway in (stack.rest, stack.ws):
        before = scrape(metrics_url(gateway)).value("perseus_cache_requests_total", cache="health", result="hit")
        for _ in range(5):  # quick requests: most fall within a cached second, two at least
            httpx.get(f"http://{gateway.addr}/health", timeout=5)
        after = scrape(metrics_url(gateway)).value("perseus_cache_requests_total", cache="health", result="hit")
        assert after >= before + 2


def test_price_update_queue_drops_are_a_counter(stack: Stack) -> None:
    page = scrape(stack.core_metrics)
    assert page.types["perseus_price_updates_dropped"] == "counter"
    assert page.value("perseus_price_updates_dropped_total") == 0  # Redis keeps up: nothing dropped
    assert page.types["perseus_price_updates_pending"] == "gauge"
    connected = until(
        lambda: scrape(stack.core_metrics),
        lambda p: p.value("perseus_venue_connected", exchange="sim") == 1,
        "the sim venue connected",
    )
    assert connected.types["perseus_venue_connected"] == "gauge"


def test_ws_connections_are_a_gauge_and_growing_counts_are_counters(stack: Stack) -> None:
    url = metrics_url(stack.ws)
    page = scrape(url)
    assert page.types["perseus_ws_connections"] == "gauge"
    for name in ("perseus_ws_events", "perseus_ws_skipped_events", "perseus_ws_slow_closes"):
        assert page.types[name] == "counter", name
    assert page.types["perseus_ws_core_streams_opened"] == "counter"
    assert page.types["perseus_ws_event_lag_seconds"] == "summary"
    base = page.value("perseus_ws_connections")
    with (
        ws_connect(f"ws://{stack.ws.addr}/public/v1/stream?apiKey={stack.key}", open_timeout=10),
        ws_connect(f"ws://{stack.ws.addr}/public/v1/stream?apiKey={stack.key}", open_timeout=10),
    ):
        until(lambda: scrape(url), lambda p: p.value("perseus_ws_connections") == base + 2, "two connections")
    until(lambda: scrape(url), lambda p: p.value("perseus_ws_connections") == base, "both closed")
