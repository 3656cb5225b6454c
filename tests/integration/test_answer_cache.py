"""Seed 004's answer caching (issue 17): price ranges kept 5 minutes, consensus 60 s, in Redis, through a real
REST gateway and core. Only windows that ended are kept (a window ending now still grows); a kept answer is
identical to the one an uncached core gives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from tests.support.processes import Process, free_port, run_cli, running_core, running_gateway

pytestmark = pytest.mark.integration

RANGE = "/public/v1/prices/range"
CONSENSUS = "/public/v1/aggregates/consensus"


@dataclass(frozen=True, slots=True)
class Stack:
    env: dict[str, str]
    rest: Process
    key: str
    metrics: str

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = httpx.get(
            f"http://{self.rest.addr}{path}", params=params, headers={"X-API-Key": self.key}, timeout=5
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def ingest(self, symbol: str, *feeds: tuple[str, str, float]) -> None:
        body = {
            "feeds": [
                {"symbol": symbol, "price": price, "volume": "1", "source": source, "timestamp": iso(ago)}
                for price, source, ago in feeds
            ]
        }
        response = httpx.post(
            f"http://{self.rest.addr}/internal/v1/ingest", headers={"X-API-Key": self.key}, json=body, timeout=5
        )
        assert response.status_code == 200 and response.json()["data"]["failed"] == 0, response.text

    def cache_counts(self, cache: str) -> tuple[float, float]:
        text = httpx.get(self.metrics, timeout=5).text
        counts = {"hit": 0.0, "miss": 0.0}
        for result in counts:
            line = f'perseus_cache_requests_total{{cache="{cache}",result="{result}"}} '
            counts[result] = next(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))
        return counts["hit"], counts["miss"]


def iso(ago_s: float) -> str:
    """``ago_s`` seconds before now, to the second (a window built once is asked again with the same bounds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - ago_s)) + ".000Z"


def fresh_symbol(tag: str) -> str:
    return f"{tag}{time.time_ns() % 1_000_000}-USD"


@pytest.fixture(scope="module")
def stack(migrated_env: dict[str, str]) -> Iterator[Stack]:
    created = run_cli(["keys", "create", "--tier", "internal"], migrated_env)
    assert created.returncode == 0, created.stderr
    metrics = f"127.0.0.1:{free_port()}"
    with (
        running_core(
            migrated_env, PERSEUS_EXCHANGES="sim", PERSEUS_SIM_TRADES_PER_S="0", PERSEUS_CORE_METRICS_ADDR=metrics
        ) as core,
        running_gateway("rest", migrated_env, core.addr) as rest,
    ):
        yield Stack(migrated_env, rest, created.stdout.strip().splitlines()[-1], f"http://{metrics}/metrics")


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def kept(store: redis.Redis, prefix: str, kind: str) -> dict[bytes, int]:
    """The kept answers of ``kind`` and their remaining time to live, in ms."""
    return {key: int(store.pttl(key)) for key in store.scan_iter(match=f"{prefix}answers:{kind}:*")}


def test_a_past_range_is_kept_five_minutes_and_served_again(stack: Stack, store: redis.Redis) -> None:
    symbol = fresh_symbol("ACR")
    stack.ingest(symbol, ("10.5", "coinbase", 600), ("10.7", "kraken", 590))
    window = {"symbol": symbol, "interval": "1m", "from": iso(900), "to": iso(300)}
    hits, misses = stack.cache_counts("price_range")
    prefix = stack.env["PERSEUS_REDIS_PREFIX"]
    before = set(kept(store, prefix, "price_range"))
    first = stack.get(RANGE, **window)
    assert sum(bucket["num_feeds"] for bucket in first["data"]) == 2
    assert stack.cache_counts("price_range") == (hits, misses + 1)
    [ttl] = [ms for key, ms in kept(store, prefix, "price_range").items() if key not in before]
    assert 290_000 < ttl <= 300_000
    stack.ingest(symbol, ("99.9", "coinbase", 580))  # a late tick inside the window: the kept answer stands
    again = stack.get(RANGE, **window)
    assert again["data"] == first["data"]
    assert (again["meta"]["interval"], again["meta"]["count"]) == (first["meta"]["interval"], first["meta"]["count"])
    assert stack.cache_counts("price_range") == (hits + 1, misses + 1)
    other_limit = stack.get(RANGE, **window, limit=999)  # another request: computed, and it has the late tick
    assert sum(bucket["num_feeds"] for bucket in other_limit["data"]) == 3


def test_a_kept_answer_is_identical_to_an_uncached_one(stack: Stack) -> None:
    """The same window asked of a core on another Redis prefix (nothing kept there) gives the same body."""
    symbol = fresh_symbol("IDN")
    stack.ingest(symbol, ("1.25", "coinbase", 700), ("1.35", "kraken", 650), ("1.3", "coinbase", 640))
    window = {"symbol": symbol, "interval": "5m", "from": iso(1200), "to": iso(400)}
    stack.get(RANGE, **window)
    from_cache = stack.get(RANGE, **window)
    at = {"symbols": symbol, "timestamp": iso(500)}
    stack.get(CONSENSUS, **at)
    consensus_from_cache = stack.get(CONSENSUS, **at)
    other = {**stack.env, "PERSEUS_REDIS_PREFIX": f"{stack.env['PERSEUS_REDIS_PREFIX']}acu:"}
    with running_core(other, PERSEUS_MODE="pw-host") as core, running_gateway("rest", other, core.addr) as rest:
        fresh = Stack(other, rest, stack.key, stack.metrics)
        assert fresh.get(RANGE, **window)["data"] == from_cache["data"]
        assert fresh.get(CONSENSUS, **at)["data"] == consensus_from_cache["data"]


def test_a_range_ending_now_is_not_kept(stack: Stack) -> None:
    symbol = fresh_symbol("NOW")
    stack.ingest(symbol, ("5.5", "coinbase", 30))
    counts = stack.cache_counts("price_range")
    first = stack.get(RANGE, symbol=symbol, interval="1m", **{"from": iso(600)})  # `to`: now
    stack.ingest(symbol, ("5.6", "coinbase", 20))
    second = stack.get(RANGE, symbol=symbol, interval="1m", **{"from": iso(600)})
    assert sum(b["num_feeds"] for b in second["data"]) == sum(b["num_feeds"] for b in first["data"]) + 1
    assert stack.cache_counts("price_range") == counts  # neither a hit nor a miss: not a cacheable request


def test_consensus_at_a_past_time_is_kept_sixty_seconds_and_now_is_not(stack: Stack, store: redis.Redis) -> None:
    symbol = fresh_symbol("CNS")
    stack.ingest(symbol, ("20", "coinbase", 200), ("22", "kraken", 190))
    at = {"symbols": symbol, "timestamp": iso(100)}
    hits, misses = stack.cache_counts("consensus")
    prefix = stack.env["PERSEUS_REDIS_PREFIX"]
    before = set(kept(store, prefix, "consensus"))  # earlier tests' answers may still be kept
    first = stack.get(CONSENSUS, **at)
    [price] = first["data"]
    assert price["num_sources"] == 2
    [ttl] = [ms for key, ms in kept(store, prefix, "consensus").items() if key not in before]
    assert 50_000 < ttl <= 60_000
    stack.ingest(symbol, ("30", "binance", 150))  # a third source inside the window: the kept answer stands
    assert stack.get(CONSENSUS, **at)["data"] == first["data"]
    assert stack.cache_counts("consensus") == (hits + 1, misses + 1)
    now = stack.get(CONSENSUS, symbols=symbol)  # the window up to now: computed each time
    assert now["data"][0]["num_sources"] == 3
    assert stack.cache_counts("consensus") == (hits + 1, misses + 1)
