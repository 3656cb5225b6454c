"""Candle bodies with each candle's public JSON kept by its bytes: byte for byte what body_of gives, bounded."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from core.rpc.wire import length_delimited, repeated_field_bytes, varint
from gateways.rest.candles import CANDLES, CANDLES_FIELD, _agrees
from gateways.rest.reads import ProjectedItems, body_of, repeated_slices
from perseus.marketdata.v1 import candles_pb2, common_pb2, market_data_service_pb2 as md


def candle(minute: int, close: str, *, sequence_num: int = 0) -> candles_pb2.Candle:
    message = candles_pb2.Candle(
        exchange="sim", symbol="BTC-USD", timeframe=common_pb2.TIMEFRAME_1M, open="1", high="2", low="0.5",
        close=close, volume="3", sequence_num=sequence_num, exchange_id=7,
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


# --- the GetCandles reply as wire bytes (issue 18.5): walked, never parsed whole -------------------------------


def core_reply(candles: list[candles_pb2.Candle]) -> bytes:
    """A reply as the core builds it: the stored candles' bytes behind their tags."""
    return repeated_field_bytes(1, [c.SerializeToString() for c in candles])


def unknown_fields() -> bytes:
    """One unknown field of each wire type: varint, fixed64, length-delimited, a group holding two, fixed32."""
    return (
        varint(7 << 3 | 0) + varint(300)
        + varint(8 << 3 | 1) + b"\x01" * 8
        + length_delimited(9, b"not a candle")
        + varint(10 << 3 | 3) + varint(1 << 3 | 0) + varint(5) + length_delimited(2, b"xy") + varint(10 << 3 | 4)
        + varint(2000 << 3 | 5) + b"\x02" * 4
    )  # fmt: skip


def test_a_wire_body_is_body_of_the_parsed_reply() -> None:
    bodies = ProjectedItems(CANDLES, max_items=100)
    candles = [candle(0, "1.5"), candle(1, "1.75"), candles_pb2.Candle(symbol="ETH-USD"), candle(0, "1.5")]
    reply = core_reply(candles)
    expected = body_of(md.GetCandlesResponse.FromString(reply).candles, CANDLES)
    slices = repeated_slices(reply, CANDLES_FIELD)
    assert slices == [c.SerializeToString() for c in candles]
    assert bodies.wire_body(slices, candles_pb2.Candle) == expected
    assert bodies.wire_body(slices, candles_pb2.Candle) == expected  # now from the memo
    assert bodies.body(candles) == expected  # the two ways share one memo


def test_an_empty_reply_is_an_empty_list() -> None:
    bodies = ProjectedItems(CANDLES, max_items=100)
    assert repeated_slices(b"", CANDLES_FIELD) == []
    assert bodies.wire_body(repeated_slices(b"", CANDLES_FIELD), candles_pb2.Candle) == b'{"data":[]}'
    assert body_of(md.GetCandlesResponse.FromString(b"").candles, CANDLES) == b'{"data":[]}'


def test_long_candles_and_other_field_numbers() -> None:
    bodies = ProjectedItems(CANDLES, max_items=100)
    # lengths of one, two and three bytes
    candles = [candle(5, "1"), candle(6, "2" * 200), candle(7, "3" * 20_000), candle(8, "4" * 130)]
    reply = core_reply(candles)
    slices = repeated_slices(reply, CANDLES_FIELD)
    assert slices == [c.SerializeToString() for c in candles]
    assert bodies.wire_body(slices, candles_pb2.Candle) == body_of(candles, CANDLES)
    # a field numbered 16 or more has a key of two bytes: read the long way
    other = length_delimited(20, b"a") + length_delimited(1, b"b") + length_delimited(20, b"c" * 300)
    assert repeated_slices(other, 20) == [b"a", b"c" * 300]
    assert repeated_slices(other, 1) == [b"b"]


def test_unknown_fields_in_the_reply_and_in_candles_are_skipped() -> None:
    bodies = ProjectedItems(CANDLES, max_items=100)
    extra = unknown_fields()
    one, two = candle(3, "4").SerializeToString() + extra, candle(4, "5").SerializeToString()
    # a field 1 of another wire type is an unknown field to the parser, not a candle
    reply = extra + length_delimited(1, one) + varint(1 << 3 | 0) + varint(9) + extra + length_delimited(1, two)
    parsed = md.GetCandlesResponse.FromString(reply)
    assert len(parsed.candles) == 2
    assert repeated_slices(reply, CANDLES_FIELD) == [one, two]
    assert bodies.wire_body(repeated_slices(reply, CANDLES_FIELD), candles_pb2.Candle) == body_of(
        parsed.candles, CANDLES
    )


@pytest.mark.parametrize(
    "reply",
    [
        b"\x0a",  # a key and no length
        b"\x0a\x85",  # a length cut short
        b"\x0a\x80\x01" + b"x" * 127,  # a two-byte length, one byte short
        b"\x0a\x80\x80\x01" + b"x" * 100,  # a three-byte length, far too short
        b"\x0a\x05abc",  # shorter than its length
        b"\x08\xff",  # a truncated varint
        b"\x09\x00\x00",  # a truncated fixed64
        b"\x02\x00",  # field number 0
        b"\x0e",  # wire type 6
        varint(10 << 3 | 3) + varint(11 << 3 | 4),  # a group closed by another field number
    ],
)
def test_malformed_replies_raise_as_the_parser_does(reply: bytes) -> None:
    with pytest.raises(DecodeError):
        md.GetCandlesResponse.FromString(reply)
    with pytest.raises(DecodeError):
        repeated_slices(reply, CANDLES_FIELD)


def test_agrees_compares_the_newest_candle_by_bytes_or_else_as_candles() -> None:
    newest = candle(9, "7")
    member = newest.SerializeToString()
    probe = b"123:" + member
    same_candle_other_bytes = member + unknown_fields()  # equal as a candle? only if unknown fields compare equal
    assert _agrees([candle(8, "6").SerializeToString(), member], probe, unbounded=True)
    assert not _agrees([member, candle(10, "7").SerializeToString()], probe, unbounded=True)
    # another encoding of the same candle (fields in another order) still agrees
    reordered = b"".join(
        length_delimited(n, getattr(newest, name).encode()) for n, name in ((8, "close"), (1, "exchange"))
    ) + candles_pb2.Candle(
        symbol=newest.symbol, timeframe=newest.timeframe, timestamp=newest.timestamp, open=newest.open,
        high=newest.high, low=newest.low, volume=newest.volume, exchange_id=newest.exchange_id,
    ).SerializeToString()  # fmt: skip
    assert reordered != member and candles_pb2.Candle.FromString(reordered) == newest
    assert _agrees([reordered], probe, unbounded=True)
    assert _agrees([same_candle_other_bytes], probe, unbounded=True) == (
        candles_pb2.Candle.FromString(same_candle_other_bytes) == newest
    )
    assert _agrees([], b"0:", unbounded=True) and not _agrees([], probe, unbounded=True)
    assert not _agrees([member], b"0:", unbounded=True)
    assert _agrees([], probe, unbounded=False)


def test_the_memo_is_bounded_for_wire_bodies_too() -> None:
    bodies = ProjectedItems(CANDLES, max_items=2)
    for start in range(4):
        items = [candle(minute, str(minute)) for minute in range(start, start + 5)]
        slices = repeated_slices(core_reply(items), CANDLES_FIELD)
        assert bodies.wire_body(slices, candles_pb2.Candle) == body_of(items, CANDLES)
        assert len(bodies) <= 2
