"""The SDK stream's seq bookkeeping: each event handed over once, holes refilled, lost history as one SeqGap."""

from __future__ import annotations

from typing import Any

import pytest

from perseus_sdk.stream import LiveEvent, LiveStream, Refill, SeqGap, SeqTracker


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


def test_a_jump_asks_for_a_refill_and_drops_the_channel_until_the_next_seq_arrives() -> None:
    tracker = SeqTracker()
    tracker.accept(event("prices:A", 1))
    assert tracker.accept(event("prices:A", 5)) == [Refill("prices:A")]
    assert tracker.accept(event("prices:A", 6)) == []  # live, past the hole: the refill brings it again
    assert tracker.accept(event("other:B", 9))[0] == LiveEvent("price_update", "other:B", 9, {"price": "9"})
    refilled = [*tracker.accept(event("prices:A", 2)), *tracker.accept(event("prices:A", 3))]
    assert [item.seq for item in refilled] == [2, 3]  # type: ignore[union-attr]
    assert tracker.accept(event("prices:A", 5)) == [Refill("prices:A")]  # 4 is still missing: refilled again
    tracker.resumed()  # a new connection resumes everything
    assert tracker.accept(event("prices:A", 5)) == [Refill("prices:A")]


def test_history_that_no_longer_reaches_back_is_one_gap_then_the_replay_goes_on() -> None:
    tracker = SeqTracker()
    tracker.accept(event("prices:A", 1))
    tracker.accept(event("prices:A", 9))  # the jump: a refill is under way
    gap = tracker.resume_gap(
        {"type": "resume_gap", "channel": "prices:A", "requested_seq": 1, "first_available_seq": 7}
    )
    assert gap == [SeqGap("prices:A", after_seq=1, next_seq=7)]
    assert [item.seq for item in tracker.accept(event("prices:A", 7))] == [7]  # type: ignore[union-attr]
    assert [item.seq for item in tracker.accept(event("prices:A", 8))] == [8]  # type: ignore[union-attr]
    no_gap = {"type": "resume_gap", "channel": "prices:A", "requested_seq": 8, "first_available_seq": 9}
    assert tracker.resume_gap(no_gap) == []


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
