"""The chaos suite's invariant checkers on hand-made rows: each must pass what is true and catch what is not."""

from __future__ import annotations

from decimal import Decimal

from tests.chaos.checks import CandleRow, Seen, TickRow, check_candles, check_feeds, check_seqs, check_slots

D = Decimal
MIN = 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % 3_600_000  # an hour boundary


# ---- seqs


def test_consecutive_seqs_are_clean() -> None:
    report = check_seqs([Seen("prices:A", 5), Seen("prices:B", 1), Seen("prices:A", 6), Seen("prices:B", 2)])
    assert report.ok and report.events == 4


def test_a_silent_jump_is_caught() -> None:
    report = check_seqs([Seen("prices:A", 5), Seen("prices:A", 6), Seen("prices:A", 9)])
    assert not report.ok
    assert report.silent_gaps[0][1] == "prices:A: 6 -> 9 with no gap signalled"


def test_a_signalled_gap_accounts_for_the_jump() -> None:
    report = check_seqs([Seen("prices:A", 5), Seen("prices:A", 5, next_seq=9), Seen("prices:A", 9)])
    assert report.ok and report.gaps_signalled == 1 and report.missing_signalled == 3


def test_a_gap_that_does_not_start_at_the_last_event_is_caught() -> None:
    report = check_seqs([Seen("prices:A", 5), Seen("prices:A", 7, next_seq=9), Seen("prices:A", 9)])
    assert not report.ok


def test_a_gap_too_short_for_the_jump_is_caught() -> None:
    report = check_seqs([Seen("prices:A", 5), Seen("prices:A", 5, next_seq=7), Seen("prices:A", 9)])
    assert len(report.silent_gaps) == 1


def test_duplicates_and_going_back_are_caught() -> None:
    report = check_seqs([Seen("c", 1), Seen("c", 2), Seen("c", 2), Seen("c", 1), Seen("c", 3)])
    assert len(report.duplicates) == 2 and not report.silent_gaps


# ---- feeds


def key(n: int) -> tuple[str, str, int, Decimal, Decimal]:
    return ("CHX-USD", "kraken", T0 + n, D("100.5"), D("1"))


def test_every_acknowledged_feed_stored_once() -> None:
    report = check_feeds([key(1), key(2)], [key(1), key(2), key(3)])
    assert report.ok and report.stored_unacknowledged == 1


def test_a_missing_or_doubled_feed_is_caught() -> None:
    assert check_feeds([key(1), key(2)], [key(1)]).missing == [key(2)]
    assert check_feeds([key(1)], [key(1), key(1)]).duplicated == [key(1)]


# ---- candles


def tick(offset_ms: int, price: str, volume: str, stored_after_ms: int = 10) -> TickRow:
    return TickRow(T0 + offset_ms, D(price), D(volume), (T0 + offset_ms + stored_after_ms) * 1000)


def candle(tf: str, start: int, o: str, h: str, lo: str, c: str, v: str, *, synthetic: bool = False) -> CandleRow:
    length = {"1m": MIN, "5m": 5 * MIN, "1h": 60 * MIN}[tf]
    written = (T0 + start + length + 2_100) * 1000  # written when the clock closed it
    return CandleRow("BTC-USD", tf, T0 + start, length, D(o), D(h), D(lo), D(c), D(v), synthetic, written)


TICKS = [tick(1_000, "10", "1"), tick(20_000, "12", "2"), tick(40_000, "9", "1.5"), tick(59_000, "11", "0.5")]


def test_a_true_candle_passes_in_every_timeframe() -> None:
    rows = [
        candle("1m", 0, "10", "12", "9", "11", "5"),
        candle("1m", MIN, "11", "11", "11", "11", "0", synthetic=True),  # no tick: flat at the previous close
        candle("5m", 0, "10", "12", "9", "11", "5"),
    ]
    report = check_candles(rows, TICKS, grace_ms=2_000)
    assert report.ok, report.mismatches
    assert report.checked == 3


def test_a_candle_missing_the_ticks_before_a_takeover_is_caught() -> None:
    # the new writer's candle: open and volume from its own ticks only (the corruption)
    report = check_candles([candle("1m", 0, "9", "11", "9", "11", "2")], TICKS, grace_ms=2_000)
    assert not report.ok
    assert "ticks say O 10 H 12 L 9 C 11 V 5" in report.mismatches[0][1]


def test_a_synthetic_candle_over_stored_ticks_is_caught() -> None:
    report = check_candles([candle("1m", 0, "10", "10", "10", "10", "0", synthetic=True)], TICKS, grace_ms=2_000)
    assert not report.ok


def test_a_synthetic_candle_off_the_previous_close_is_caught() -> None:
    rows = [candle("1m", 0, "10", "12", "9", "11", "5"), candle("1m", MIN, "10", "10", "10", "10", "0", synthetic=True)]
    assert not check_candles(rows, TICKS, grace_ms=2_000).ok


def test_a_tick_stored_after_its_minute_closed_may_be_late_in_every_timeframe() -> None:
    late = tick(30_000, "50", "7", stored_after_ms=40_000)  # stored 10 s after its minute + grace
    rows = [candle("1m", 0, "10", "12", "9", "11", "5"), candle("5m", 0, "10", "12", "9", "11", "5")]
    report = check_candles(rows, [*TICKS, late], grace_ms=2_000)
    assert report.ok, report.mismatches
    assert report.late_ticks == 1  # the 5m candle, written later, must not count it either


def test_a_tick_stored_in_time_cannot_be_left_out() -> None:
    in_time = tick(30_000, "50", "7", stored_after_ms=100)
    report = check_candles([candle("1m", 0, "10", "12", "9", "11", "5")], [*TICKS, in_time], grace_ms=2_000)
    assert not report.ok


def test_ties_on_the_first_timestamp_accept_either_price() -> None:
    ticks = [tick(1_000, "10", "1"), tick(1_000, "10.5", "1"), tick(2_000, "11", "1")]
    assert check_candles([candle("1m", 0, "10.5", "11", "10", "11", "3")], ticks, grace_ms=2_000).ok
    assert not check_candles([candle("1m", 0, "11", "11", "10", "11", "3")], ticks, grace_ms=2_000).ok


# ---- slots


def test_slots() -> None:
    assert check_slots(20, 20) is None
    assert check_slots(23, 20) == "3 slot(s) leaked: 23 live entries, 20 open connections"
    assert check_slots(0, 2) == "2 slot(s) missing: 0 live entries, 2 open connections"
