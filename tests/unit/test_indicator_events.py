"""``IndicatorEvents``: a wave's ``indicator_update`` events, byte for byte what ``indicator_event`` encodes.

The wave encoder joins parts it encoded once (per series, per call, per close time) around each reading's own
fields, packed by hand when none is zero; ``indicator_event`` fills a protobuf message field by field. Every
event a subscriber gets must be the same bytes either way: zeros (left out by proto3, -0.0 too), signs,
non-finite values, every stage and zone, long names (a two-byte length), other periods and ids, series met
again with other ids, and a fixed MACD-V series stepped from seeded prices.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from core.codec.events import IndicatorEvents, indicator_event
from core.domain.indicators import Bar, MacdVParams, MacdVState, MacdVValue, step
from core.domain.signals import Stage, Zone
from core.domain.timeframes import TIMEFRAMES, Timeframe
from core.services.indicators import IndicatorReading
from perseus.marketdata.v1 import stream_service_pb2

T0 = 1_800_000_000_000 - 1_800_000_000_000 % (24 * 3600 * 1000)
NOW = T0 + 123_456


def reading(value: MacdVValue, **changes: Any) -> IndicatorReading:
    fields: dict[str, Any] = {
        "exchange": "sim",
        "exchange_id": 3,
        "symbol": "BTC-USD",
        "symbol_id": 0,
        "timeframe": Timeframe.M1,
        "value": value,
        "params": MacdVParams(),
    }
    fields.update(changes)
    return IndicatorReading(**fields)


def value(**changes: Any) -> MacdVValue:
    base = MacdVValue(T0, 61.25, 48.5, 12.75, 101.5, 100.25, 2.0, Stage.RALLYING, Zone.POSITIVE, True, 0)
    return base._replace(**changes)


def assert_same_bytes(readings: list[IndicatorReading], now_ms: int = NOW) -> None:
    encoder = IndicatorEvents()
    expected = [indicator_event(r, now_ms=now_ms) for r in readings]
    assert encoder.encode(readings, now_ms=now_ms) == expected
    assert encoder.encode(readings, now_ms=now_ms) == expected  # again, from the parts it kept


def test_a_fixed_macd_v_series_encodes_to_the_same_bytes() -> None:
    rng = random.Random(18)
    readings = []
    for timeframe in TIMEFRAMES:
        state: MacdVState | None = None
        price = 100.0
        for i in range(120):
            start, price = price, price * (1 + rng.gauss(0, 0.004))
            high, low = max(start, price) * (1 + rng.random() * 0.006), min(start, price) * (1 - rng.random() * 0.006)
            bar = Bar(T0 + i * timeframe.ms, round(high, 4), round(low, 4), round(price, 4))
            state, stepped = step(state, bar)
            assert stepped is not None
            if stepped.ready:
                readings.append(reading(stepped, timeframe=timeframe, symbol=f"S{i % 7}-USD"))
    assert len(readings) > 500
    assert len({r.value.stage for r in readings}) > 3 and len({r.value.zone for r in readings}) > 3
    assert_same_bytes(readings)


@pytest.mark.parametrize(
    "changes",
    [
        {"macd_v": 0.0},
        {"signal": 0.0},
        {"histogram": 0.0},
        {"fast_ema": 0.0, "slow_ema": 0.0, "atr": 0.0, "macd_v": 0.0, "signal": 0.0, "histogram": 0.0},
        {"histogram": -0.0},
        {"atr": -0.0},
        {"macd_v": -1e-300, "signal": 5e-324},
        {"macd_v": math.inf, "signal": -math.inf},
        {"histogram": math.nan},
        {"open_time": 0},
        {"open_time": -3 * 60_000},
        {"open_time": T0 + 60_000 * 7 + 1},  # a close time with nanos
    ],
)
def test_zeros_signs_and_odd_values_encode_as_protobuf_does(changes: dict[str, object]) -> None:
    assert_same_bytes([reading(value(**changes))])


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("zone", list(Zone))
def test_every_stage_and_zone(stage: Stage, zone: Zone) -> None:
    assert_same_bytes([reading(value(stage=stage, zone=zone))])


def test_names_ids_periods_and_publish_times() -> None:
    long_symbol = "A" * 60 + "-" + "B" * 60  # the MacdV passes 127 bytes: its length takes two bytes
    readings = [
        reading(value(), symbol=long_symbol, exchange="x" * 32),
        reading(value(), exchange_id=0),
        reading(value(), exchange_id=2**40, symbol_id=77),
        reading(value(), params=MacdVParams(fast=5, slow=300, signal=200, atr=1)),
        reading(value(open_time=T0 + 86_400_000), timeframe=Timeframe.D1),
    ]
    for now_ms in (NOW, 0, 1, T0 + 999):
        assert_same_bytes(readings, now_ms)


def test_a_series_met_again_with_other_ids_or_params_is_encoded_with_them() -> None:
    encoder = IndicatorEvents()
    first, then = reading(value(), exchange_id=3), reading(value(), exchange_id=4, symbol_id=9)
    other_params = reading(value(), exchange_id=4, symbol_id=9, params=MacdVParams(fast=10))
    for r in (first, then, other_params, first):
        assert encoder.encode([r], now_ms=NOW) == [indicator_event(r, now_ms=NOW)]


def test_many_close_times_keep_the_cache_bounded_and_the_bytes_right() -> None:
    encoder = IndicatorEvents()
    readings = [reading(value(open_time=T0 + i * 60_000)) for i in range(3_000)]
    assert encoder.encode(readings, now_ms=NOW) == [indicator_event(r, now_ms=NOW) for r in readings]
    assert len(encoder._timestamps) <= 1_024


def test_the_event_reads_back_as_the_reading() -> None:
    r = reading(value())
    event = stream_service_pb2.StreamEvent.FromString(IndicatorEvents().encode([r], now_ms=NOW)[0])
    assert event.channel == "indicators:sim:BTC-USD:1m"
    assert event.indicator_update.macd_v == 61.25 and event.indicator_update.atr == 2.0
    assert event.indicator_update.exchange_id == 3 and event.indicator_update.fast_period == 12
    assert event.publish_time.ToMilliseconds() == NOW
