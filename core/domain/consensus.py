"""Cross-source consensus of one price per source: exact median, mean and population standard deviation.

Pure code on Decimal, never float. The median is exact (the middle price, or
the mean of the two middle ones, as ``percentile_cont(0.5)``). Mean and
standard deviation are computed in a context wide enough for every accepted
price (at most 40 significant digits, none below 10**-60 or at 10**30), so
the only roundings are the division and the square root, far below what is
shown; they are rendered half-even at the inputs' largest scale plus
:data:`STAT_EXTRA_SCALE` digits, with trailing zeros beyond the inputs' scale
dropped ("100.3", "0.6164414").

The standard deviation is the *population* one: the sources present are the
whole population voting, not a sample of a larger one, and it is defined (0)
for a single source, where the sample form would be undefined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

STAT_EXTRA_SCALE = 8
_EXACT = Context(prec=1_000, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class Consensus:
    symbol: str
    median: Decimal
    mean: Decimal
    std_dev: Decimal
    sources: tuple[str, ...]
    ts_ms: int

    @property
    def price(self) -> Decimal:
        """The consensus price is the median: one outlying venue cannot move it far."""
        return self.median


def scale(value: Decimal) -> int:
    """Digits after the decimal point as written (``Decimal("1.50")`` has 2)."""
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def median(values: Sequence[Decimal]) -> Decimal:
    """Exact median: the middle value, or the mean of the two middle ones (percentile_cont 0.5)."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    with localcontext(_EXACT):
        return (ordered[middle - 1] + ordered[middle]) / 2


def mean(values: Sequence[Decimal]) -> Decimal:
    if not values:
        raise ValueError("mean of no values")
    with localcontext(_EXACT):
        return sum(values, Decimal(0)) / len(values)


def population_std_dev(values: Sequence[Decimal]) -> Decimal:
    """sqrt((n·Σx² - (Σx)²) / n²): the numerator is exact; one rounding in the division, one in the root."""
    if not values:
        raise ValueError("standard deviation of no values")
    with localcontext(_EXACT):
        n = len(values)
        total = sum(values, Decimal(0))
        squares = sum((v * v for v in values), Decimal(0))
        return ((n * squares - total * total) / (n * n)).sqrt()


def render_stat(value: Decimal, input_scale: int) -> Decimal:
    """``value`` rounded to ``input_scale + STAT_EXTRA_SCALE`` digits, zeros beyond ``input_scale`` dropped."""
    with localcontext(_EXACT):
        rounded = value.quantize(Decimal(1).scaleb(-(input_scale + STAT_EXTRA_SCALE)))
        kept = max(input_scale, scale(rounded.normalize()))
        return rounded.quantize(Decimal(1).scaleb(-kept))


def consensus_of(symbol: str, votes: Mapping[str, Decimal], end_ms: int) -> Consensus:
    """Consensus of one vote per source; ``votes`` maps each source to its price."""
    values = list(votes.values())
    input_scale = max(scale(v) for v in values)
    return Consensus(
        symbol=symbol,
        median=median(values),
        mean=render_stat(mean(values), input_scale),
        std_dev=render_stat(population_std_dev(values), input_scale),
        sources=tuple(sorted(votes)),
        ts_ms=end_ms,
    )
