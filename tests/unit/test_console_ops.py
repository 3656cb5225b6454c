"""The operator view's pure parts: the ingest meter, the limiter's key usage and the top keys' merge."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from core.domain.prices import Tick
from core.services.ingest_meter import RATE_WINDOW_S, IngestMeter
from gateways.rest.limiter import KeyUsage
from gateways.rest.ops import TOP_KEYS, _top_keys
from gateways.rest.ratelimit import NOT_LIMITED, WINDOW_S, Decision


def tick(ts_ms: int) -> Tick:
    return Tick("BTC-USD", 1, 1, "sim", ts_ms)  # type: ignore[arg-type]


def test_the_meter_counts_stored_ticks_passes_them_on_and_measures_rate_and_lag() -> None:
    passed: list[Sequence[Tick]] = []

    async def inner(ticks: Sequence[Tick]) -> None:
        passed.append(ticks)

    now: dict[str, float] = {"ms": 1_000_000, "mono": 0.0}
    meter = IngestMeter(inner, clock_ms=lambda: int(now["ms"]), monotonic=lambda: now["mono"])
    first = meter.reading()
    assert (first.ticks_total, first.ticks_per_second, first.last_stored_ms) == (0, 0.0, None)
    for _ in range(10):
        now["mono"] += 1.0
        now["ms"] += 1000
        asyncio.run(meter([tick(int(now["ms"]) - 40), tick(int(now["ms"]) - 25)]))
        meter.reading()
    reading = meter.reading()
    assert reading.ticks_total == 20 and len(passed) == 10
    assert reading.ticks_per_second == 2.0
    assert reading.lag_ms == 25.0  # from the batch's newest tick
    assert reading.last_stored_ms == now["ms"]
    now["mono"] += RATE_WINDOW_S + 1  # nothing stored since
    meter.reading()
    now["mono"] += RATE_WINDOW_S + 1
    assert meter.reading().ticks_per_second == 0.0


def decision(used: int, limit: int, window: int) -> Decision:
    return Decision(True, limit, used, (window + 1) * WINDOW_S)


def test_key_usage_keeps_the_latest_count_of_the_current_window_only() -> None:
    usage = KeyUsage(max_keys=2)
    usage.record(1, "a", "pro", decision(5, 100, 7))
    usage.record(2, "b", "free", decision(9, 100, 7))
    usage.record(1, "a", "pro", decision(11, 100, 7))
    usage.record(3, "c", "free", decision(50, 100, 7))  # beyond the cap this window: not added
    usage.record(4, "admin", "admin", NOT_LIMITED)  # unlimited: never counted
    top = usage.top(10, 7 * WINDOW_S + 1)
    assert [(k.key_id, k.used) for k in top] == [(1, 11), (2, 9)]
    assert usage.top(10, 8 * WINDOW_S) == []  # the window turned
    usage.record(2, "b", "free", decision(1, 100, 8))
    usage.record(1, "a", "pro", decision(99, 100, 7))  # a late answer of the old window: ignored
    assert [(k.key_id, k.used) for k in usage.top(10, 8 * WINDOW_S)] == [(2, 1)]


def test_top_keys_merge_the_rest_gateways_records_of_this_minute() -> None:
    now = 100 * WINDOW_S + 5

    def spent(key_id: int, used: int, limit: int = 10, tier: str = "pro") -> dict[str, object]:
        return {"key_id": key_id, "name": f"k{key_id}", "tier": tier, "used": used, "limit": limit}

    records = [
        {"kind": "rest", "window": 100, "top_keys": [spent(1, 5)]},
        {"kind": "rest", "window": 100, "top_keys": [spent(1, 8), spent(2, 6, tier="free")]},
        {"kind": "rest", "window": 99, "top_keys": [spent(3, 99, 100)]},  # last minute's
        {"kind": "ws", "window": 100, "top_keys": [spent(4, 99, 100)]},  # not a REST gateway's
    ]
    top = _top_keys(records, now)
    assert [(k["key_id"], k["used"], k["share"]) for k in top] == [(1, 8, 0.8), (2, 6, 0.6)]
    many = [
        {
            "kind": "rest",
            "window": 100,
            "top_keys": [{"key_id": i, "name": "", "tier": "free", "used": i, "limit": 1000} for i in range(1, 30)],
        }
    ]
    assert len(_top_keys(many, now)) == TOP_KEYS
    assert _top_keys(None, now) == []
