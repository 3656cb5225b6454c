"""Latency percentiles and a one-line report, shared by the benchmarks."""

from __future__ import annotations

import statistics


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def summary(latencies_s: list[float]) -> dict[str, float]:
    values = sorted(latencies_s)
    return {
        "p50_ms": percentile(values, 0.50) * 1000,
        "p95_ms": percentile(values, 0.95) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "mean_ms": (statistics.fmean(values) * 1000) if values else float("nan"),
    }
