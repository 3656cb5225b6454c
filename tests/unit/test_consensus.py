"""Consensus arithmetic: exact Decimal median, mean and population standard deviation, and their rendering."""

from __future__ import annotations

import statistics
from decimal import Decimal
from fractions import Fraction

import pytest

from core.domain.consensus import Consensus, consensus_of, mean, median, population_std_dev, render_stat

D = Decimal


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["100.10"], "100.10"),
        (["3", "1", "2"], "2"),
        (["2", "1"], "1.5"),
        (["100.10", "100.20", "100.40", "100.30"], "100.25"),
        (["10.5", "11.25"], "10.875"),
        # 40 significant digits each: exact, no rounding to the default 28-digit context.
        (["1234567890123456789012345678901234567890", "1234567890123456789012345678901234567891"],
         "1234567890123456789012345678901234567890.5"),
    ],
)  # fmt: skip
def test_the_median_is_exact(values: list[str], expected: str) -> None:
    assert str(median([D(v) for v in values])) == expected


def test_mean_and_population_std_dev_are_exact_decimals() -> None:
    values = [D("100.4"), D("101"), D("99.5")]
    assert mean(values) == D("100.3")
    # Cross-check with the standard library, which works on exact fractions.
    assert abs(population_std_dev(values) - statistics.pstdev(values)) < D("1e-25")


@pytest.mark.parametrize(
    ("value", "input_scale", "expected"),
    [
        (D(1) / 3, 0, "0.33333333"),
        (D(2) / 3, 2, "0.6666666667"),
        (D("100.2000000000000001"), 2, "100.20"),
        (D("1.5"), 0, "1.5"),
        (D(0), 2, "0.00"),
        (D("0.61644140029689764502"), 1, "0.6164414"),
        (D("250"), 0, "250"),
    ],
)
def test_statistics_render_at_the_input_scale_plus_eight_digits(
    value: Decimal, input_scale: int, expected: str
) -> None:
    assert format(render_stat(value, input_scale), "f") == expected


def test_consensus_of_three_sources() -> None:
    result = consensus_of("QRY-USD", {"kraken": D("99.5"), "coinbase": D("100.4"), "binance": D("101")}, 42)
    assert result == Consensus("QRY-USD", D("100.4"), D("100.3"), D("0.6164414"), ("binance", "coinbase", "kraken"), 42)
    assert result.price == result.median


def test_consensus_of_two_sources_takes_the_middle_of_both() -> None:
    result = consensus_of("QRY-USD", {"coinbase": D("10"), "kraken": D("11")}, 1)
    assert (str(result.median), str(result.mean), str(result.std_dev)) == ("10.5", "10.5", "0.5")


def test_consensus_of_one_source_has_no_spread() -> None:
    result = consensus_of("QRY-USD", {"sim": D("100.10")}, 1)
    assert (str(result.median), str(result.mean), str(result.std_dev), result.sources) == (
        "100.10",
        "100.10",
        "0.00",
        ("sim",),
    )


def test_huge_and_tiny_prices_together_lose_no_digit_to_the_default_context() -> None:
    values = [D("999999999999999999999999999999.9999999999"), D("0.0000000000000000000000000000010000000001")]
    exact = sum((Fraction(v) for v in values), Fraction(0)) / 2  # 28-digit Decimal addition would round
    assert Fraction(median(values)) == exact  # two values: the median is their mean
    assert Fraction(render_stat(mean(values), 40)) == exact  # 41 decimals, within 40 + 8
    assert str(median(values)) == "499999999999999999999999999999.99999999995000000000000000000050000000005"
