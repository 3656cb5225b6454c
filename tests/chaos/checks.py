"""The invariants the chaos suite ends with, as pure functions over what was recorded and stored.

No I/O here, so ``tests/unit/test_chaos_checks.py`` can feed each checker
hand-made rows and prove that it fails when it should: a checker that can
never fail would make every chaos run look good.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

# ---- WS seqs: gap-free per channel, or each gap signalled ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    """One item a WS client handed over: an event (``next_seq`` None) or a signalled gap (after ``seq``)."""

    channel: str
    seq: int
    next_seq: int | None = None  # set for a gap: seqs in (seq, next_seq) will never come
    t: float = 0.0  # when it was handed over (harness monotonic clock), to say which drill it fell in

    @property
    def is_gap(self) -> bool:
        return self.next_seq is not None


@dataclass
class SeqReport:
    events: int = 0
    gaps_signalled: int = 0
    missing_signalled: int = 0  # seqs covered by signalled gaps
    silent_gaps: list[tuple[float, str]] = field(default_factory=list)
    duplicates: list[tuple[float, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.silent_gaps and not self.duplicates


def check_seqs(items: Iterable[Seen]) -> SeqReport:
    """Per channel, every event's seq is the last one + 1, unless a gap right before it said where it resumes.

    A seq that goes back or repeats is a duplicate (the SDK promises each event once); a jump with no
    :class:`SeqGap` saying so is a silent loss. The first event of a channel may start anywhere.
    """
    report = SeqReport()
    last: dict[str, int] = {}
    for item in items:
        if item.is_gap:
            assert item.next_seq is not None
            report.gaps_signalled += 1
            report.missing_signalled += max(0, item.next_seq - item.seq - 1)
            if item.channel in last and item.seq != last[item.channel]:
                said = f"{item.channel}: gap signalled after {item.seq} but the last event was {last[item.channel]}"
                report.silent_gaps.append((item.t, said))
            last[item.channel] = item.next_seq - 1
            continue
        report.events += 1
        previous = last.get(item.channel)
        if previous is not None:
            if item.seq <= previous:
                report.duplicates.append((item.t, f"{item.channel}: seq {item.seq} after {previous}"))
                continue
            if item.seq != previous + 1:
                report.silent_gaps.append((item.t, f"{item.channel}: {previous} -> {item.seq} with no gap signalled"))
        last[item.channel] = item.seq
    return report


# ---- acknowledged feeds stored exactly once -------------------------------------------------------------------

MINUTE_MS = 60_000

FeedKey = tuple[str, str, int, Decimal, Decimal]  # symbol, source, ts_ms, price, volume: the idempotency key


@dataclass
class FeedReport:
    acknowledged: int
    missing: list[FeedKey]
    duplicated: list[FeedKey]
    stored_unacknowledged: int  # committed although the client saw a failure: allowed (a retry is safe)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.duplicated


def check_feeds(acknowledged: Iterable[FeedKey], stored: Iterable[FeedKey]) -> FeedReport:
    acked = set(acknowledged)
    counts = Counter(stored)
    missing = sorted(key for key in acked if counts[key] == 0)
    duplicated = sorted(key for key, n in counts.items() if n > 1)
    extra = sum(1 for key in counts if key not in acked)
    return FeedReport(len(acked), missing, duplicated, extra)


# ---- candles equal their recomputation from the stored ticks --------------------------------------------------


@dataclass(frozen=True, slots=True)
class TickRow:
    ts_ms: int
    price: Decimal
    volume: Decimal
    stored_us: int  # ingested_at (its transaction's start), microseconds since the epoch


@dataclass(frozen=True, slots=True)
class CandleRow:
    symbol: str
    timeframe: str
    open_ms: int
    length_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    synthetic: bool
    written_us: int  # updated_at: when the candle row was inserted (never updated: ON CONFLICT DO NOTHING)

    def describe(self) -> str:
        kind = " synthetic" if self.synthetic else ""
        return (
            f"{self.symbol} {self.timeframe}{kind} @{self.open_ms}: "
            f"O {self.open} H {self.high} L {self.low} C {self.close} V {self.volume}"
        )


@dataclass
class CandleReport:
    checked: int = 0
    late_ticks: int = 0  # ticks the close rule allowed to miss their candle
    mismatches: list[tuple[int, str]] = field(default_factory=list)  # (open time in ms, what differs)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _matches(candle: CandleRow, ticks: Sequence[TickRow], previous_close: Decimal | None) -> bool:
    if not ticks:
        flat = candle.open == candle.high == candle.low == candle.close and candle.volume == 0
        return candle.synthetic and flat and (previous_close is None or candle.close == previous_close)
    if candle.synthetic:
        return False
    first = min(t.ts_ms for t in ticks)
    last = max(t.ts_ms for t in ticks)
    # ticks sharing the first (last) timestamp: the builder keeps whichever it saw first (last); either is true
    opens = {t.price for t in ticks if t.ts_ms == first}
    closes = {t.price for t in ticks if t.ts_ms == last}
    return (
        candle.open in opens
        and candle.close in closes
        and candle.high == max(t.price for t in ticks)
        and candle.low == min(t.price for t in ticks)
        and candle.volume == sum((t.volume for t in ticks), Decimal(0))
    )


def check_candles(candles: Sequence[CandleRow], ticks: Sequence[TickRow], *, grace_ms: int) -> CandleReport:
    """Each candle against the aggregate of the ticks of its interval (one symbol, candles in any order).

    Which ticks belong (core/domain/candles.py): a tick stored after the candle was written cannot be in
    it; every other tick of the interval must be, except that a 1m candle may close once the clock passes
    its end + ``grace_ms``, so a tick stored after that moment may be *late*: stored, and in no candle of
    any timeframe (a higher timeframe is the roll-up of its 1m candles). A candle with no tick is
    synthetic: flat at the previous candle's close, volume 0.
    """
    report = CandleReport()
    ordered = sorted(ticks, key=lambda t: t.ts_ms)
    by_tf: dict[str, list[CandleRow]] = {}
    for candle in candles:
        by_tf.setdefault(candle.timeframe, []).append(candle)
    for series in by_tf.values():
        series.sort(key=lambda c: c.open_ms)
        previous: CandleRow | None = None
        for candle in series:
            report.checked += 1
            end = candle.open_ms + candle.length_ms
            inside = [t for t in ordered if candle.open_ms <= t.ts_ms < end]
            strict = [t for t in inside if t.stored_us <= candle.written_us]
            lenient = [t for t in strict if t.stored_us <= _minute_deadline_us(t.ts_ms, grace_ms)]
            adjacent = previous is not None and previous.open_ms + previous.length_ms == candle.open_ms
            prev_close = previous.close if adjacent and previous is not None else None
            if _matches(candle, strict, prev_close):
                pass
            elif len(lenient) < len(strict) and _matches(candle, lenient, prev_close):
                report.late_ticks += len(strict) - len(lenient)
            else:
                expected = _aggregate_text(strict)
                report.mismatches.append((candle.open_ms, f"{candle.describe()}; ticks say {expected}"))
            previous = candle
    return report


def _minute_deadline_us(ts_ms: int, grace_ms: int) -> int:
    """When the clock may close the 1m candle of ``ts_ms``: a tick stored later may be late."""
    return (ts_ms - ts_ms % MINUTE_MS + MINUTE_MS + grace_ms) * 1000


def _aggregate_text(ticks: Sequence[TickRow]) -> str:
    if not ticks:
        return "no tick (synthetic expected)"
    ordered = sorted(ticks, key=lambda t: t.ts_ms)
    volume = sum((t.volume for t in ticks), Decimal(0))
    high, low = max(t.price for t in ticks), min(t.price for t in ticks)
    return f"O {ordered[0].price} H {high} L {low} C {ordered[-1].price} V {volume} ({len(ticks)} ticks)"


# ---- connection slots -----------------------------------------------------------------------------------------


def check_slots(live_entries: int, open_connections: int) -> str | None:
    """The WS gateway's live slot entries for the key must be exactly its open connections."""
    if live_entries == open_connections:
        return None
    kind = "leaked" if live_entries > open_connections else "missing"
    count = abs(live_entries - open_connections)
    return f"{count} slot(s) {kind}: {live_entries} live entries, {open_connections} open connections"
