"""The SDK stream's seq bookkeeping: what is handed over once, and holes said as SeqGap."""

from __future__ import annotations

from typing import Any

import pytest

from perseus_sdk.stream import LiveEvent, LiveStream, SeqGap, SeqTracker


def event(channel: str, seq: int) -> dict[str, Any]:
    return {"type": "price_update", "channel": channel, "seq": seq, "data": {"price": str(seq)}}


def test_the_first_event_of_a_channel_is_handed_over_whatever_its_seq() -> None:
    tracker = SeqTracker()
    assert tracker.accept(event("prices:A", 41)) == [LiveEvent("price_update", "prices:A", 41, {"price": "41"})]
    assert tracker.last == {"prices:A": 41}


def test_events_a_resume_brings_twice_are_dropped() -> None:
    tracker = SeqTracker()
    for seq in (1, 2, 3):
        tracker.accept(event("prices:A", seq))
    assert tracker.accept(event("prices:A", 2)) == [] and tracker.accept(event("prices:A", 3)) == []
    assert [item.seq for item in tracker.accept(event("prices:A", 4))] == [4]  # type: ignore[union-attr]


def test_a_hole_is_one_gap_before_the_next_event() -> None:
    tracker = SeqTracker()
    tracker.accept(event("prices:A", 1))
    gap, next_event = tracker.accept(event("prices:A", 5))
    assert gap == SeqGap("prices:A", after_seq=1, next_seq=5)
    assert isinstance(next_event, LiveEvent) and next_event.seq == 5


def test_channels_are_tracked_apart_and_resume_names_only_seen_ones() -> None:
    tracker = SeqTracker()
    tracker.accept(event("prices:A", 7))
    tracker.accept(event("candles:B:1m", 3))
    assert tracker.accept(event("candles:B:1m", 4))[0] == LiveEvent("price_update", "candles:B:1m", 4, {"price": "4"})
    assert tracker.resume_of(["prices:A", "candles:B:1m", "prices:C"]) == {"prices:A": 7, "candles:B:1m": 4}
    tracker.forget(["prices:A"])
    assert tracker.resume_of(["prices:A"]) == {}
    assert len(tracker.accept(event("prices:A", 2))) == 1  # a fresh subscribe starts over, no gap, no drop


async def test_more_than_50_channels_are_refused_before_anything_is_sent() -> None:
    stream = LiveStream("ws://127.0.0.1:1", "key")  # never connected
    with pytest.raises(ValueError, match="at most 50"):
        await stream.subscribe(*(f"prices:S{i}-USD" for i in range(51)))
