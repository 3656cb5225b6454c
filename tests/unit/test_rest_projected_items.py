"""Candle bodies with each candle's public JSON kept by its bytes: byte for byte what body_of gives, bounded."""

from __future__ import annotations

from gateways.rest.candles import CANDLES
from gateways.rest.reads import ProjectedItems, body_of
from perseus.marketdata.v1 import candles_pb2


def candle(minute: int, close: str, *, sequence_num: int = 0) -> candles_pb2.Candle:
    message = candles_pb2.Candle(
        exchange="sim", symbol="BTC-USD", timeframe=1, open="1", high="2", low="0.5", close=close, volume="3",
        sequence_num=sequence_num, exchange_id=7,
    )  # fmt: skip
    message.timestamp.FromMilliseconds(1_735_689_600_000 + minute * 60_000)
    return message


def test_the_body_is_body_of_s_and_a_rewritten_candle_is_projected_again() -> None:
    bodies = ProjectedItems(CANDLES, max_items=100)
    first = [candle(0, "1.5"), candle(1, "1.75"), candles_pb2.Candle(symbol="ETH-USD")]  # no timestamp: null
    assert bodies.body(first) == body_of(first, CANDLES)
    assert bodies.body([]) == body_of([], CANDLES) == b'{"data":[]}'
    rewritten = [candle(1, "1.8"), candle(0, "1.5")]  # the same open time, another close
    assert bodies.body(rewritten) == body_of(rewritten, CANDLES)
    assert b'"close":"1.8"' in bodies.body(rewritten) and b'"close":"1.75"' not in bodies.body(rewritten)


def test_internal_fields_change_the_key_never_the_body() -> None:
    bodies = ProjectedItems(CANDLES, max_items=100)
    one, other = candle(2, "9", sequence_num=1), candle(2, "9", sequence_num=2)
    assert bodies.body([one]) == bodies.body([other]) == body_of([one], CANDLES)
    assert b"sequence" not in bodies.body([one]) and b"exchange_id" not in bodies.body([one])


def test_the_memo_is_bounded() -> None:
    bodies = ProjectedItems(CANDLES, max_items=2)
    for minute in range(5):
        items = [candle(minute, "1"), candle(minute + 100, "2")]
        assert bodies.body(items) == body_of(items, CANDLES)
        assert len(bodies) <= 2
