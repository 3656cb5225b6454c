"""Rate-limit arithmetic: costs by route and size, fixed windows, decisions and the headers a client sees."""

from __future__ import annotations

import pytest

from gateways.rest import ratelimit
from gateways.rest.ratelimit import NOT_LIMITED, Decision, decide, window_of, window_reset_s


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (ratelimit.candles_cost(1), 1),
        (ratelimit.candles_cost(100), 1),
        (ratelimit.candles_cost(101), 2),
        (ratelimit.candles_cost(1000), 10),
        (ratelimit.alerts_cost(250), 3),
        (ratelimit.symbols_cost(1), 1),
        (ratelimit.symbols_cost(100), 10),
        (ratelimit.consensus_cost(11), 4),
        (ratelimit.range_cost(3_600_000, 60_000, 1000), 3),  # an hour of minutes: 60 buckets, under a day
        (ratelimit.range_cost(90 * 86_400_000, 86_400_000, 1000), 92),  # 90 days of days: the scan counts
        (ratelimit.range_cost(7 * 86_400_000, 60_000, 10_000), 1 + 10 + 7),  # 10,080 minutes, limit 10,000
        (ratelimit.range_cost(7 * 86_400_000, 60_000, 5), 1 + 1 + 7),  # few buckets sent, as many ticks read
        (ratelimit.range_cost(0, 60_000, 1000), 3),
        (ratelimit.per_unit(0, 100), 1),
    ],
)
def test_costs_grow_with_what_is_asked(cost: int, expected: int) -> None:
    assert cost == expected


def test_windows_are_whole_minutes() -> None:
    assert window_of(119.999) == 1 and window_of(120.0) == 2
    assert window_reset_s(window_of(90.5)) == 120


def test_a_request_is_allowed_while_it_fits_and_a_refused_one_spends_nothing() -> None:
    assert decide(0, 10, 1000, 5) == Decision(True, 1000, 10, 360)
    assert decide(990, 10, 1000, 5).allowed
    refused = decide(995, 10, 1000, 5)
    assert not refused.allowed and refused.used == 995 and refused.remaining == 5


def test_unlimited_keys_are_never_refused() -> None:
    assert decide(10**9, 10**6, ratelimit.UNLIMITED, 1) is NOT_LIMITED
    assert NOT_LIMITED.headers() == {
        "X-RateLimit-Limit": "0",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "0",
    }


def test_headers_and_retry_after() -> None:
    decision = decide(400, 1, 1000, 29_000_000)
    assert decision.headers() == {
        "X-RateLimit-Limit": "1000",
        "X-RateLimit-Remaining": "599",
        "X-RateLimit-Reset": str(29_000_001 * 60),
    }
    reset = decision.reset_s
    assert decision.retry_after_s(reset - 12.3) == 13
    assert decision.retry_after_s(reset + 5) == 1  # never 0 or negative
