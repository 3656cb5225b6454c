"""Stages, zones, alerts and the public trade-signal projection: the tables of core/domain/signals.py."""

from __future__ import annotations

import pytest

from core.domain.indicators import MacdVValue
from core.domain.signals import (
    ALERT_LEVELS,
    ALERT_TYPE_LEVEL,
    ALERT_TYPE_SIGNAL_CROSS,
    RANGING_MIN_BARS,
    SIGNAL_TYPE_LEVEL,
    SIGNAL_TYPE_SIGNAL_CROSS,
    Direction,
    Stage,
    Strength,
    Zone,
    classify,
    derive_direction,
    derive_strength,
    detect_alerts,
    neutral_run,
    zone_of,
)

T0 = 1_700_000_040_000
MIN = 60_000


def reading(
    macd_v: float, signal: float, *, ready: bool = True, neutral_bars: int = 0, open_time: int = T0
) -> MacdVValue:
    stage, zone = classify(macd_v, signal, None)
    return MacdVValue(open_time, macd_v, signal, macd_v - signal, 0.0, 0.0, 1.0, stage, zone, ready, neutral_bars)


def after(previous: MacdVValue, macd_v: float, signal: float, *, ready: bool = True) -> MacdVValue:
    stage, zone = classify(macd_v, signal, previous)
    return MacdVValue(
        previous.open_time + MIN,
        macd_v,
        signal,
        macd_v - signal,
        0.0,
        0.0,
        1.0,
        stage,
        zone,
        ready,
        neutral_run(macd_v, previous),
    )


@pytest.mark.parametrize(
    ("macd_v", "zone"),
    [
        (-1_000.0, Zone.DEEP_NEGATIVE),
        (-150.01, Zone.DEEP_NEGATIVE),
        (-150.0, Zone.NEGATIVE),
        (-100.0, Zone.NEGATIVE),
        (-50.01, Zone.NEGATIVE),
        (-50.0, Zone.NEUTRAL),
        (0.0, Zone.NEUTRAL),
        (49.99, Zone.NEUTRAL),
        (50.0, Zone.POSITIVE),
        (99.99, Zone.POSITIVE),
        (100.0, Zone.ELEVATED),
        (149.99, Zone.ELEVATED),
        (150.0, Zone.OVERBOUGHT),
        (1_000.0, Zone.OVERBOUGHT),
    ],
)
def test_zone_bounds_belong_to_the_zone_above(macd_v: float, zone: Zone) -> None:
    assert zone_of(macd_v) is zone
    assert classify(macd_v, 0.0, None)[1] is zone


@pytest.mark.parametrize(
    ("macd_v", "signal", "stage"),
    [
        (200.0, 250.0, Stage.OVERBOUGHT),  # the risk zones win over direction
        (150.0, 140.0, Stage.OVERBOUGHT),
        (-200.0, -100.0, Stage.OVERSOLD),
        (-151.0, -300.0, Stage.OVERSOLD),
        (120.0, 100.0, Stage.RALLYING),
        (50.0, 50.0, Stage.RALLYING),  # on the signal line counts as rising
        (49.0, 10.0, Stage.REBOUNDING),
        (-120.0, -140.0, Stage.REBOUNDING),
        (120.0, 130.0, Stage.RETRACING),
        (-50.0, -40.0, Stage.RETRACING),
        (-51.0, -40.0, Stage.REVERSING),
        (-149.0, -100.0, Stage.REVERSING),
        (10.0, 5.0, Stage.REBOUNDING),  # neutral zone, not long enough to be ranging
        (10.0, 15.0, Stage.RETRACING),
    ],
)
def test_stage_table(macd_v: float, signal: float, stage: Stage) -> None:
    assert classify(macd_v, signal, None)[0] is stage


def test_ranging_after_enough_neutral_readings_in_a_row() -> None:
    almost = reading(10.0, 5.0, neutral_bars=RANGING_MIN_BARS - 2)
    assert classify(10.0, 5.0, almost)[0] is Stage.REBOUNDING
    enough = reading(10.0, 5.0, neutral_bars=RANGING_MIN_BARS - 1)
    assert classify(10.0, 5.0, enough) == (Stage.RANGING, Zone.NEUTRAL)
    assert classify(-20.0, 30.0, enough)[0] is Stage.RANGING
    assert classify(60.0, 30.0, enough) == (Stage.RALLYING, Zone.POSITIVE)  # leaving the band ends it
    assert neutral_run(60.0, enough) == 0 and neutral_run(0.0, enough) == RANGING_MIN_BARS


def test_a_run_of_neutral_readings_builds_up_to_ranging() -> None:
    value = reading(0.0, 1.0, neutral_bars=1)
    for _ in range(RANGING_MIN_BARS - 2):
        value = after(value, 0.0, 1.0)
        assert value.stage is Stage.RETRACING
    value = after(value, 0.0, 1.0)
    assert (value.neutral_bars, value.stage) == (RANGING_MIN_BARS, Stage.RANGING)


@pytest.mark.parametrize("level", ALERT_LEVELS)
def test_each_level_crossed_up_and_down_raises_one_alert(level: int) -> None:
    below, above = reading(level - 3.0, level - 3.0), reading(level + 2.0, level + 2.0)
    (up,) = detect_alerts(below, after(below, level + 2.0, level + 2.0))
    assert (up.alert_type, up.signal_type, up.trigger_label) == (
        ALERT_TYPE_LEVEL,
        SIGNAL_TYPE_LEVEL,
        f"level_{level:+d}_up",
    )
    assert up.direction is Direction.BULLISH and up.trigger_value == level + 2.0 and up.open_time == T0 + MIN
    (down,) = detect_alerts(above, after(above, level - 3.0, level - 3.0))
    assert down.trigger_label == f"level_{level:+d}_down" and down.direction is Direction.BEARISH


def test_touching_a_level_counts_once() -> None:
    below = reading(48.0, 48.0)
    on = after(below, 50.0, 50.0)
    assert [a.trigger_label for a in detect_alerts(below, on)] == ["level_+50_up"]
    assert detect_alerts(on, after(on, 50.0, 50.0)) == []
    assert [a.trigger_label for a in detect_alerts(on, after(on, 49.0, 49.0))] == ["level_+50_down"]


def test_a_jump_over_several_levels_reports_the_last_one_crossed() -> None:
    low, high = reading(40.0, 40.0), reading(160.0, 160.0)
    assert [a.trigger_label for a in detect_alerts(low, after(low, 160.0, 160.0))] == ["level_+150_up"]
    assert [a.trigger_label for a in detect_alerts(high, after(high, 40.0, 40.0))] == ["level_+50_down"]
    deep = reading(-160.0, -160.0)
    assert [a.trigger_label for a in detect_alerts(deep, after(deep, 0.0, 0.0))] == ["level_-50_up"]


def test_no_alert_without_a_crossing() -> None:
    for a, b in [
        (60.0, 90.0),
        (90.0, 60.0),
        (-10.0, 40.0),
        (-60.0, -95.0),
        (-110.0, -140.0),
        (200.0, 500.0),
        (-200.0, -151.0),
    ]:
        previous = reading(a, a - 1.0)
        assert detect_alerts(previous, after(previous, b, b - 1.0)) == [], (a, b)


def test_signal_line_crosses_outside_the_neutral_zone() -> None:
    previous = reading(80.0, 82.0)
    (up,) = detect_alerts(previous, after(previous, 85.0, 83.0))
    assert (up.alert_type, up.signal_type, up.trigger_label) == (
        ALERT_TYPE_SIGNAL_CROSS,
        SIGNAL_TYPE_SIGNAL_CROSS,
        "signal_cross_up",
    )
    assert up.direction is Direction.BULLISH and up.strength is Strength.MODERATE and up.signal_delta == 2.0
    previous = reading(-120.0, -125.0)
    (down,) = detect_alerts(previous, after(previous, -130.0, -127.0))
    assert down.trigger_label == "signal_cross_down" and down.direction is Direction.BEARISH
    assert down.strength is Strength.STRONG and down.signal_delta == -3.0


def test_signal_line_crosses_in_the_neutral_zone_are_quiet() -> None:
    previous = reading(10.0, 12.0)
    assert detect_alerts(previous, after(previous, 14.0, 13.0)) == []


def test_a_level_and_a_signal_cross_on_the_same_close() -> None:
    previous = reading(95.0, 97.0)
    alerts = detect_alerts(previous, after(previous, 101.0, 99.0))
    assert [a.trigger_label for a in alerts] == ["level_+100_up", "signal_cross_up"]


def test_nothing_during_warm_up() -> None:
    cold, warm = reading(40.0, 40.0, ready=False), reading(40.0, 40.0)
    assert detect_alerts(None, reading(160.0, 150.0)) == []
    assert detect_alerts(cold, after(cold, 160.0, 150.0)) == []
    assert detect_alerts(warm, after(warm, 160.0, 150.0, ready=False)) == []
    assert detect_alerts(warm, after(warm, 160.0, 150.0)) != []


@pytest.mark.parametrize(
    ("value", "strength"),
    [
        (0.0, Strength.WEAK),
        (-49.99, Strength.WEAK),
        (50.0, Strength.MODERATE),
        (-99.0, Strength.MODERATE),
        (100.0, Strength.STRONG),
        (-149.99, Strength.STRONG),
        (150.0, Strength.EXTREME),
        (-400.0, Strength.EXTREME),
    ],
)
def test_strength_from_the_magnitude_of_the_trigger_value(value: float, strength: Strength) -> None:
    assert derive_strength(value) is strength


@pytest.mark.parametrize(
    ("label", "direction"),
    [
        ("level_+150_up", Direction.BULLISH),
        ("level_-150_up", Direction.BULLISH),
        ("level_+50_down", Direction.BEARISH),
        ("signal_cross_up", Direction.BULLISH),
        ("signal_cross_down", Direction.BEARISH),
    ],
)
def test_direction_from_the_trigger_label(label: str, direction: Direction) -> None:
    assert derive_direction(label) is direction


def test_a_label_without_a_direction_is_refused() -> None:
    with pytest.raises(ValueError):
        derive_direction("level_3")


def test_alert_strength_follows_the_value_that_crossed() -> None:
    previous = reading(145.0, 145.0)
    (alert,) = detect_alerts(previous, after(previous, 155.0, 155.0))
    assert alert.strength is Strength.EXTREME
    previous = reading(155.0, 155.0)
    (alert,) = detect_alerts(previous, after(previous, 140.0, 140.0))
    assert (alert.direction, alert.strength) == (Direction.BEARISH, Strength.STRONG)


def _level_crossed_by_scanning(before: float, now: float) -> str | None:
    """The rule spelled out: the level nearest ``now`` with ``before`` on one side and ``now`` on the other."""
    if before < now:
        crossed = [level for level in ALERT_LEVELS if before < level <= now]
        return f"level_{max(crossed):+d}_up" if crossed else None
    if now < before:
        crossed = [level for level in ALERT_LEVELS if now < level <= before]
        return f"level_{min(crossed):+d}_down" if crossed else None
    return None


def test_level_crossings_match_the_rule_on_every_pair_of_values() -> None:
    """detect_alerts finds the level by bisection; on values at, near and between every level it names the
    same one the rule does (and nothing for NaN)."""
    points = sorted({x + d for x in (*ALERT_LEVELS, 0, -200, 200, 1e9, -1e9) for d in (-1.5, -1e-9, 0.0, 1e-9, 0.5)})
    points.append(float("nan"))
    for before in points:
        for now in points:
            labels = [
                a.trigger_label
                for a in detect_alerts(reading(before, before), reading(now, now))
                if a.alert_type == ALERT_TYPE_LEVEL
            ]
            expected = _level_crossed_by_scanning(before, now)
            assert labels == ([expected] if expected else []), (before, now)
