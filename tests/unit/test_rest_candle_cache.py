"""The candle body cache: the core's window key, and a body served only under the probe it was fetched with."""

from __future__ import annotations

import redis.asyncio as aioredis

from core.adapters.redis_keys import RedisKeys
from gateways.rest.candle_cache import MAX_AGE_S, CandleCache, window_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(clock: Clock, max_entries: int = 10) -> CandleCache:
    return CandleCache(aioredis.Redis(), "p:", max_entries=max_entries, clock=clock)  # never connects here


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
