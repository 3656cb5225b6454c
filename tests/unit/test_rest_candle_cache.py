"""The candle body cache: the core's window key, and a body served only under the probe it was fetched with."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from common.resp import AutoPipeline
from core.adapters.redis_keys import RedisKeys
from gateways.rest.candle_cache import MAX_AGE_S, CandleCache, cache_counter, window_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(clock: Clock, max_entries: int = 10) -> CandleCache:
    counter = cache_counter(CollectorRegistry())
    pipeline = AutoPipeline({"host": "127.0.0.1", "port": 1}, tls=False, client_name="unused")  # never connects here
    return CandleCache(pipeline, "p:", counter, max_entries=max_entries, clock=clock)


def test_the_window_key_is_the_cores() -> None:
    assert window_key("perseus:", "coinbase", "BTC-USD", "1h") == RedisKeys("perseus:").candle_window(
        "coinbase", "BTC-USD", "1h"
    )


def test_a_body_is_served_only_under_the_same_probe_and_while_young() -> None:
    clock = Clock()
    candles = cache(clock)
    candles.put("k", b"100:member", b"body")
    assert candles.get("k", b"100:member") == b"body"
    assert candles.get("k", b"160:newer") is None  # a candle closed since
    assert candles.get("other", b"100:member") is None
    clock.now += MAX_AGE_S
    assert candles.get("k", b"100:member") is None


def test_the_cache_is_bounded() -> None:
    candles = cache(Clock(), max_entries=2)
    for key in ("a", "b", "c"):
        candles.put(key, b"", key.encode())
    assert candles.get("a", b"") is None and candles.get("c", b"") == b"c"


async def test_requests_missing_with_one_probe_share_one_fetch() -> None:
    candles = cache(Clock())
    calls = 0
    release = asyncio.Event()

    async def fetch() -> tuple[bytes, bool]:
        nonlocal calls
        calls += 1
        await release.wait()
        return b"body", True

    waiting = [asyncio.ensure_future(candles.answer("k", b"1:m", fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [b"body"] * 5 and calls == 1
    assert await candles.answer("k", b"1:m", fetch) == b"body" and calls == 1  # kept
    assert await candles.answer("k", None, fetch) == b"body" and calls == 2  # no probe: always fetched


async def test_requests_without_a_probe_share_one_fetch_and_nothing_is_kept() -> None:
    """Redis did not answer (the gateway's loop past its Redis deadlines, issue 18.4): requests for one key
    at the same time make one core call, not one each; a later one fetches anew; nothing is kept."""
    candles = cache(Clock())
    calls = 0
    release = asyncio.Event()

    async def fetch() -> tuple[bytes, bool]:
        nonlocal calls
        calls += 1
        number = calls
        await release.wait()
        return f"body {number}".encode(), True

    waiting = [asyncio.ensure_future(candles.answer("k", None, fetch)) for _ in range(5)]
    other = asyncio.ensure_future(candles.answer("other", None, fetch))
    await asyncio.sleep(0.01)  # every request is waiting for a fetch
    release.set()
    assert sorted(await asyncio.gather(*waiting, other)) == [b"body 1"] * 5 + [b"body 2"]
    assert calls == 2 and len(candles) == 0
    assert await candles.answer("k", None, fetch) == b"body 3"  # not kept, and not joined once finished


async def test_an_answer_that_may_not_be_kept_is_served_once() -> None:
    candles = cache(Clock())

    async def fetch() -> tuple[bytes, bool]:
        return b"old", False

    assert await candles.answer("k", b"2:m", fetch) == b"old"
    assert candles.get("k", b"2:m") is None


async def test_a_failed_fetch_reaches_every_waiting_request_and_is_not_kept() -> None:
    candles = cache(Clock())

    async def fetch() -> tuple[bytes, bool]:
        await asyncio.sleep(0.01)
        raise RuntimeError("core down")

    results = await asyncio.gather(*(candles.answer("k", b"3:m", fetch) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    with pytest.raises(RuntimeError):
        await candles.answer("k", b"3:m", fetch)
