"""Stream sessions over an in-memory hub and history: resume by seq, live events with no gap or duplicate left
untold, and requests refused without changing anything (tests/integration/test_streams.py runs them on Redis)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import pytest

from core.domain.channels import Channel, ChannelFamily
from core.services.streams import (
    Delivery,
    Item,
    Rejection,
    RejectReason,
    ResumeGap,
    Streams,
    StreamSession,
    Subscribed,
    Unsubscribed,
)
from tests.support.memory_hub import MemoryHistory, MemoryHub, internal_name

BTC = Channel(ChannelFamily.PRICES, "sim", "BTC-USD", None)
NAME = "prices:sim:BTC-USD"
INTERNAL = internal_name(BTC)


def setup(seqs: range = range(0)) -> tuple[MemoryHub, MemoryHistory, Streams]:
    hub, history = MemoryHub(), MemoryHistory()
    for seq in seqs:
        history.publish(BTC, seq, f"e{seq}".encode())
    return hub, history, Streams(hub, history, default_exchange="sim", exchanges=["sim", "coinbase"])


async def collect(items: AsyncIterator[Item]) -> list[Item]:
    return [item async for item in items]


def seqs(items: list[Item]) -> list[int]:
    return [item.seq for item in items if isinstance(item, Delivery)]


async def next_batch(session: StreamSession) -> list[Item]:
    batches = cast(AsyncGenerator[list[Item], None], session.batches())
    try:
        return await anext(batches)
    finally:
        await batches.aclose()


async def test_a_resume_replays_the_history_after_the_seq_then_live_events_without_duplicates() -> None:
    hub, _, streams = setup(range(1, 6))
    session = streams.open()
    opened = await collect(session.subscribe(0, ["prices:btc/usd"], {"prices:BTC-USD": 2}))
    assert seqs(opened) == [3, 4, 5]
    assert opened[-1] == Subscribed(0, [NAME])  # the explicit name, whatever form was asked for
    hub.deliver(INTERNAL, 5, b"e5")  # already replayed: dropped
    hub.deliver(INTERNAL, 6, b"e6")
    assert await next_batch(session) == [Delivery(0, 6, b"e6")]


async def test_a_live_event_past_the_next_seq_is_filled_from_the_history_and_what_it_lacks_is_a_told_gap() -> None:
    hub, history, streams = setup(range(1, 3))
    session = streams.open()
    await collect(session.subscribe(0, [NAME], {}))  # at seq 2
    history.publish(BTC, 3, b"e3")  # seq 3 is in the history, its live message was missed
    hub.deliver(INTERNAL, 4, b"e4")
    assert seqs(await next_batch(session)) == [3, 4]
    hub.deliver(INTERNAL, 7, b"e7")  # 5 and 6 are nowhere
    assert await next_batch(session) == [ResumeGap(0, NAME, 4, 7), Delivery(0, 7, b"e7")]


async def test_a_resync_reads_what_the_history_has_after_the_last_delivered_seq() -> None:
    hub, history, streams = setup(range(1, 3))
    session = streams.open()
    await collect(session.subscribe(0, [NAME], {}))
    history.publish(BTC, 3, b"e3")
    hub.resync()  # the hub reconnected: messages may have been missed
    assert await next_batch(session) == [Delivery(0, 3, b"e3")]


async def test_a_fresh_channel_starts_at_its_first_event_with_no_gap() -> None:
    hub, _, streams = setup()
    session = streams.open()
    await collect(session.subscribe(0, [NAME], {}))
    hub.deliver(INTERNAL, 1_000_001, b"first")
    assert await next_batch(session) == [Delivery(0, 1_000_001, b"first")]


@pytest.mark.parametrize(
    ("names", "resume", "reason"),
    [
        (["prices:nyse:BTC-USD"], {}, RejectReason.INVALID_CHANNEL),
        ([NAME], {"prices:sim:ETH-USD": 1}, RejectReason.INVALID_RESUME),
        ([NAME], {NAME: 99}, RejectReason.INVALID_RESUME),  # from the future: the channel is at seq 5
        ([NAME, "prices:sim:ETH-USD"], {}, RejectReason.CHANNEL_LIMIT),
        ([], {}, RejectReason.EMPTY),
    ],
)
async def test_a_refused_subscribe_changes_nothing(
    names: list[str], resume: dict[str, int], reason: RejectReason
) -> None:
    hub, _, streams = setup(range(1, 6))
    session = streams.open(max_channels=1)
    with pytest.raises(Rejection) as refused:
        await collect(session.subscribe(0, names, resume))
    assert refused.value.reason is reason
    assert session.channel_count == 0 and hub.held(INTERNAL) == 0


async def test_an_outage_refuses_the_subscribe_as_unavailable_and_holds_nothing() -> None:
    hub, history, streams = setup(range(1, 6))
    history.down = True
    session = streams.open()
    with pytest.raises(Rejection) as refused:
        await collect(session.subscribe(0, [NAME], {}))
    assert refused.value.reason is RejectReason.UNAVAILABLE and hub.held(INTERNAL) == 0


async def test_multiplexed_requests_are_answered_in_order_with_the_events() -> None:
    hub, _, streams = setup(range(1, 3))
    session = streams.open()
    session.request(1, [NAME], {}, [])
    session.request(2, [], {}, [NAME])
    assert await next_batch(session) == [Subscribed(1, [NAME]), Unsubscribed(2, [NAME])]
    assert hub.held(INTERNAL) == 0
