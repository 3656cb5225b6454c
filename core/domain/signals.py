"""Signals: the MACD-V stage and zone of a reading, the alerts it raises, and their public projection.

Pure and clock-free. Every threshold of the indicator layer lives here, once:
zone bounds, stage rules, alert levels and the direction/strength rules of the
public trade signal. docs/design/indicators.md ("Zones, stages and alerts")
gives the rationale.

Conventions: a bound belongs to the zone above it (a reading of exactly +50 is
``positive``), and a reading is *at or above* a line when ``value >= line``; a
crossing is a change of that side between two consecutive ready readings, so a
value that touches a line and stays on it raises one alert, not one per bar.
"""

from __future__ import annotations

from bisect import bisect_right as _bisect_right
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.domain.indicators import MacdVValue


class Stage(StrEnum):
    OVERSOLD = "oversold"
    REBOUNDING = "rebounding"
    RALLYING = "rallying"
    OVERBOUGHT = "overbought"
    RETRACING = "retracing"
    REVERSING = "reversing"
    RANGING = "ranging"


class Zone(StrEnum):
    DEEP_NEGATIVE = "deep_negative"
    NEGATIVE = "negative"
    NEUTRAL = "neutral"
    POSITIVE = "positive"
    ELEVATED = "elevated"
    OVERBOUGHT = "overbought"


class Direction(StrEnum):
    BULLISH = "bullish"
    BEARISH = "bearish"


class Strength(StrEnum):
    WEAK = "weak"
    MODERATE = "moderate"
    STRONG = "strong"
    EXTREME = "extreme"


# --- Zones: MACD-V bounds (each bound belongs to the zone above it) -----------------------------------------
OVERBOUGHT_LEVEL = 150.0  # >= : overbought (risk) zone and stage
ELEVATED_LEVEL = 100.0  # >= : elevated
POSITIVE_LEVEL = 50.0  # >= : positive; the neutral band's upper edge (exclusive)
NEUTRAL_LEVEL = -50.0  # >= : neutral; below it: negative
OVERSOLD_LEVEL = -150.0  # below it: deep negative zone and oversold (risk) stage

ZONE_FLOORS: tuple[tuple[float, Zone], ...] = (
    (OVERBOUGHT_LEVEL, Zone.OVERBOUGHT),
    (ELEVATED_LEVEL, Zone.ELEVATED),
    (POSITIVE_LEVEL, Zone.POSITIVE),
    (NEUTRAL_LEVEL, Zone.NEUTRAL),
    (OVERSOLD_LEVEL, Zone.NEGATIVE),
)
LOWEST_ZONE = Zone.DEEP_NEGATIVE

# --- Stages ------------------------------------------------------------------------------------------------
RALLYING_LEVEL = POSITIVE_LEVEL  # rising (MACD-V >= signal) and >= +50: rallying, else rebounding
REVERSING_LEVEL = NEUTRAL_LEVEL  # falling (MACD-V < signal) and < -50: reversing, else retracing
RANGING_MIN_BARS = 20  # consecutive ready readings in the neutral zone before the stage is "ranging"

# --- Alerts ------------------------------------------------------------------------------------------------
ALERT_LEVELS: tuple[int, ...] = (-150, -100, -50, 50, 100, 150)  # zero is left out: inside ±50 it is chop
SIGNAL_CROSS_QUIET_ZONES = frozenset({Zone.NEUTRAL})  # signal-line crosses here raise no alert

ALERT_TYPE_LEVEL = "macdv_level"
ALERT_TYPE_SIGNAL_CROSS = "macdv_signal_cross"
SIGNAL_TYPE_LEVEL = "momentum_signal"  # public signal_type of a level crossing
SIGNAL_TYPE_SIGNAL_CROSS = "signal_line_cross"  # public signal_type of a signal-line cross
UP_SUFFIX = "_up"
DOWN_SUFFIX = "_down"
LABEL_SIGNAL_CROSS_UP = "signal_cross" + UP_SUFFIX
LABEL_SIGNAL_CROSS_DOWN = "signal_cross" + DOWN_SUFFIX

# --- Public projection: strength from |trigger value| (floors, inclusive), direction from the label ----------
STRENGTH_FLOORS: tuple[tuple[float, Strength], ...] = (
    (150.0, Strength.EXTREME),
    (100.0, Strength.STRONG),
    (50.0, Strength.MODERATE),
)
WEAKEST = Strength.WEAK


def zone_of(macd_v: float) -> Zone:
    for floor, zone in ZONE_FLOORS:
        if macd_v >= floor:
            return zone
    return LOWEST_ZONE


def neutral_run(macd_v: float, previous: MacdVValue | None) -> int:
    """Consecutive readings in the neutral zone, this one included (0 when this one is outside it)."""
    if zone_of(macd_v) is not Zone.NEUTRAL:
        return 0
    return (previous.neutral_bars if previous is not None else 0) + 1


def classify(macd_v: float, signal: float, previous: MacdVValue | None) -> tuple[Stage, Zone]:
    """Stage and zone of a reading; ``previous`` is the last *ready* reading (None to start the count afresh).

    Rules, first match wins: overbought/oversold zone -> that stage; ranging after
    ``RANGING_MIN_BARS`` neutral readings in a row; rising (MACD-V >= signal) ->
    rallying from +50, rebounding below; falling -> reversing below -50,
    retracing from -50.
    """
    stage, zone, _ = reading_of(macd_v, signal, False, previous)
    return stage, zone


def reading_of(macd_v: float, signal: float, ready: bool, previous: MacdVValue | None) -> tuple[Stage, Zone, int]:
    """``classify`` and the reading's neutral run (0 unless ``ready``) in one pass: every close takes this path."""
    if macd_v >= POSITIVE_LEVEL:
        if macd_v >= OVERBOUGHT_LEVEL:
            return Stage.OVERBOUGHT, Zone.OVERBOUGHT, 0
        zone = Zone.ELEVATED if macd_v >= ELEVATED_LEVEL else Zone.POSITIVE
    elif macd_v >= NEUTRAL_LEVEL:
        run = (previous.neutral_bars if previous is not None else 0) + 1
        if run >= RANGING_MIN_BARS:
            return Stage.RANGING, Zone.NEUTRAL, run if ready else 0
        stage = _rising_stage(macd_v) if macd_v >= signal else _falling_stage(macd_v)
        return stage, Zone.NEUTRAL, run if ready else 0
    elif macd_v >= OVERSOLD_LEVEL:
        zone = Zone.NEGATIVE
    else:
        return Stage.OVERSOLD, Zone.DEEP_NEGATIVE, 0
    return (_rising_stage(macd_v) if macd_v >= signal else _falling_stage(macd_v)), zone, 0


def _rising_stage(macd_v: float) -> Stage:
    return Stage.RALLYING if macd_v >= RALLYING_LEVEL else Stage.REBOUNDING


def _falling_stage(macd_v: float) -> Stage:
    return Stage.REVERSING if macd_v < REVERSING_LEVEL else Stage.RETRACING


def derive_direction(trigger_label: str) -> Direction:
    """Bullish for an upward crossing, bearish for a downward one."""
    if trigger_label.endswith(UP_SUFFIX):
        return Direction.BULLISH
    if trigger_label.endswith(DOWN_SUFFIX):
        return Direction.BEARISH
    raise ValueError(f"trigger label {trigger_label!r} names no direction")


def derive_strength(trigger_value: float) -> Strength:
    """How far from zero momentum was at the trigger: |MACD-V| against ``STRENGTH_FLOORS``."""
    magnitude = abs(trigger_value)
    for floor, strength in STRENGTH_FLOORS:
        if magnitude >= floor:
            return strength
    return WEAKEST


def level_label(level: int, up: bool) -> str:
    return f"level_{level:+d}{UP_SUFFIX if up else DOWN_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One crossing: internal fields (alert_type, trigger_*, signal_delta) and the public trade-signal ones."""

    open_time: int  # the candle whose close raised it
    alert_type: str
    trigger_label: str
    trigger_value: float
    signal_delta: float
    signal_type: str
    direction: Direction
    strength: Strength

    @classmethod
    def raised(cls, current: MacdVValue, alert_type: str, signal_type: str, label: str) -> Alert:
        return cls(
            open_time=current.open_time,
            alert_type=alert_type,
            trigger_label=label,
            trigger_value=current.macd_v,
            signal_delta=current.macd_v - current.signal,
            signal_type=signal_type,
            direction=derive_direction(label),
            strength=derive_strength(current.macd_v),
        )


def detect_alerts(previous: MacdVValue | None, current: MacdVValue) -> list[Alert]:
    """Alerts raised by ``current`` after ``previous``: at most one level crossing and one signal-line cross.

    Nothing unless both readings are ready. When one close jumps over several
    levels, only the last level crossed (the one nearest the new value) is
    reported: it implies the others.
    """
    if previous is None or not previous.ready or not current.ready:
        return []
    alerts: list[Alert] = []
    before, now = previous.macd_v, current.macd_v
    if before < now:
        i = _bisect_right(_LEVELS_UPWARD, now) - 1  # the highest level at or below now: crossed if above before
        if i >= 0 and _LEVELS_UPWARD[i] > before:
            label = level_label(_LEVELS_UPWARD[i], up=True)
            alerts.append(Alert.raised(current, ALERT_TYPE_LEVEL, SIGNAL_TYPE_LEVEL, label))
    elif now < before:
        i = _bisect_right(_LEVELS_UPWARD, now)  # the lowest level above now: crossed if at or below before
        if i < len(_LEVELS_UPWARD) and _LEVELS_UPWARD[i] <= before:
            label = level_label(_LEVELS_UPWARD[i], up=False)
            alerts.append(Alert.raised(current, ALERT_TYPE_LEVEL, SIGNAL_TYPE_LEVEL, label))
    is_above = now >= current.signal
    if (before >= previous.signal) is not is_above and zone_of(now) not in SIGNAL_CROSS_QUIET_ZONES:
        label = LABEL_SIGNAL_CROSS_UP if is_above else LABEL_SIGNAL_CROSS_DOWN
        alerts.append(Alert.raised(current, ALERT_TYPE_SIGNAL_CROSS, SIGNAL_TYPE_SIGNAL_CROSS, label))
    return alerts


_LEVELS_UPWARD = tuple(sorted(ALERT_LEVELS))
