"""The fan-out hub without I/O: requests it sends upstream, frames it writes to fake sinks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateways.ws.hub import MAX_BACKLOG_FRAMES, Client, Hub, Join
from gateways.ws.protocol import ErrorCode
from perseus.marketdata.v1 import prices_pb2, stream_service_pb2 as pb

BTC = "prices:sim:BTC-USD"
ETH = "prices:sim:ETH-USD"


class FakeSink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.live: list[bytes] = []
        self.failed: int | None = None

    def deliver(self, frames: bytes, now: float, count: int = 1) -> None:
        self.live.append(frames)
        self.frames.append(frames)

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def fail(self, code: int, reason: str) -> None:
        self.failed = code

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(_payload(f)) for f in self.frames]


def _payload(frame: bytes) -> bytes:
    length = frame[1] & 0x7F
    return frame[2 + {126: 2, 127: 8}.get(length, 0) :]


class Recorder:
    def __init__(self) -> None:
        self.results: list[tuple[Join | ErrorCode | None, str]] = []

    def __call__(self, result: Join | ErrorCode | None, text: str) -> None:
        self.results.append((result, text))


@pytest.fixture
def sent() -> list[pb.MultiplexRequest]:
    return []


@pytest.fixture
def hub(sent: list[pb.MultiplexRequest]) -> Hub:
    hub = Hub(sent.append, clock=lambda: 0.0)
    hub.on_connected()
    return hub


def event(channel: str, seq: int, ref: int = 0) -> pb.MultiplexResponse:
    feed = prices_pb2.PriceFeed(symbol=channel.rsplit(":", 1)[1], price=f"{seq}.0", source="sim")
    return pb.MultiplexResponse(ref=ref, event=pb.StreamEvent(channel=channel, seq=seq, price_update=feed))


def subscribed(ref: int, *channels: str) -> pb.MultiplexResponse:
    return pb.MultiplexResponse(ref=ref, subscribed=pb.Subscribed(channels=list(channels)))


def join(hub: Hub, client: Client, names: dict[str, str], resume: dict[str, int] | None = None) -> Recorder:
    done = Recorder()
    hub.subscribe(client, names, resume or {}, done)
    return done


def replay(hub: Hub, join: Join, *responses: pb.MultiplexResponse) -> None:
    """What the session does with a carried join that resumes: its replay stream's answers, then finish."""
    outcomes = [hub.on_replay(join, response) for response in responses]
    assert outcomes[-1] is True and not any(outcomes[:-1])
    hub.finish(join)


def test_the_first_client_subscribes_upstream_and_the_second_joins_without_a_request(
    hub: Hub, sent: list[pb.MultiplexRequest]
) -> None:
    a, b = Client(FakeSink()), Client(FakeSink())
    done = join(hub, a, {"prices:BTC-USD": BTC})
    assert [list(r.subscribe) for r in sent] == [[BTC]]
    hub.on_response(subscribed(sent[0].ref, BTC))
    result = done.results[0][0]
    assert isinstance(result, Join) and not result.backlog
    hub.attach(a)
    join(hub, b, {BTC: BTC})
    assert len(sent) == 1
    assert b.sink.messages() == [{"type": "subscribed", "channels": [BTC]}]  # type: ignore[attr-defined]


def test_an_event_is_rendered_once_per_name_and_written_to_every_client(
    hub: Hub, sent: list[pb.MultiplexRequest]
) -> None:
    clients = [Client(FakeSink()) for _ in range(3)]
    join(hub, clients[0], {"prices:BTC-USD": BTC})
    hub.on_response(subscribed(sent[0].ref, BTC))
    hub.attach(clients[0])
    join(hub, clients[1], {"prices:BTC-USD": BTC})
    join(hub, clients[2], {BTC: BTC})
    hub.on_response(event(BTC, 7))
    frames = [c.sink.live[-1] for c in clients]  # type: ignore[attr-defined]
    assert frames[0] is frames[1]  # the same bytes object: encoded once
    short, explicit = json.loads(_payload(frames[0])), json.loads(_payload(frames[2]))
    assert short["channel"] == "prices:BTC-USD" and explicit["channel"] == BTC
    assert short["type"] == "price_update" and short["seq"] == 7 and short["data"]["price"] == "7.0"


def test_the_last_client_leaving_unsubscribes_upstream(hub: Hub, sent: list[pb.MultiplexRequest]) -> None:
    a, b = Client(FakeSink()), Client(FakeSink())
    join(hub, a, {BTC: BTC})
    hub.on_response(subscribed(sent[0].ref, BTC))
    hub.attach(a)
    join(hub, b, {BTC: BTC})
    hub.unsubscribe(a, {BTC: BTC})
    assert len(sent) == 1
    hub.release(b)
    assert list(sent[-1].unsubscribe) == [BTC]
    assert hub.routes == {}


def test_a_resume_on_a_live_channel_gets_the_replay_then_live_events_above_it(
    hub: Hub, sent: list[pb.MultiplexRequest]
) -> None:
    a, b = Client(FakeSink()), Client(FakeSink())
    join(hub, a, {BTC: BTC})
    hub.on_response(subscribed(sent[0].ref, BTC))
    hub.attach(a)
    hub.on_response(event(BTC, 10))
    requests = len(sent)
    done = join(hub, b, {BTC: BTC}, resume={BTC: 8})
    assert len(sent) == requests  # the shared stream carries BTC already: nothing is asked of it
    carried = done.results[0][0]
    assert isinstance(carried, Join) and not carried.subscribed
    request = hub.replay_request(carried)  # on a stream of its own
    assert dict(request.resume_from) == {BTC: 8}
    hub.on_response(event(BTC, 11))  # live, while b is still joining
    replay(hub, carried, event(BTC, 9, ref=request.ref), event(BTC, 10, ref=request.ref), subscribed(request.ref, BTC))
    result = done.results[-1][0]
    assert result is carried and result.subscribed
    hub.on_response(event(BTC, 12))  # live, while b's backlog is still being written
    backlog = [json.loads(_payload(f))["seq"] for f in result.backlog]
    assert backlog == [9, 10, 11, 12]
    hub.attach(b)
    hub.on_response(event(BTC, 13))
    assert [m["seq"] for m in b.sink.messages() if "seq" in m] == [13]  # type: ignore[attr-defined]
    assert b.sink.messages()[0] == {"type": "subscribed", "channels": [BTC]}  # type: ignore[attr-defined]


def test_a_resume_gap_reaches_the_client_before_the_replay(hub: Hub, sent: list[pb.MultiplexRequest]) -> None:
    a = Client(FakeSink())
    done = join(hub, a, {"prices:BTC-USD": BTC}, resume={"prices:BTC-USD": 2})
    shared = sent[-1]
    assert list(shared.subscribe) == [BTC] and not shared.resume_from  # the shared stream never replays
    hub.on_response(subscribed(shared.ref, BTC))
    result = done.results[0][0]
    assert isinstance(result, Join) and not result.subscribed
    ref = hub.replay_request(result).ref
    gap = pb.ResumeGap(channel=BTC, requested_seq=2, first_available_seq=40)
    replay(hub, result, pb.MultiplexResponse(ref=ref, resume_gap=gap), event(BTC, 40, ref=ref), subscribed(ref, BTC))
    first, second = (json.loads(_payload(f)) for f in result.backlog)
    assert first == {"type": "resume_gap", "channel": "prices:BTC-USD", "requested_seq": 2, "first_available_seq": 40}
    assert second["seq"] == 40


def test_a_rejected_subscribe_changes_nothing(hub: Hub, sent: list[pb.MultiplexRequest]) -> None:
    a = Client(FakeSink())
    done = join(hub, a, {"prices:nowhere:BTC-USD": "prices:nowhere:BTC-USD"})
    rejected = pb.Rejected(reason=pb.REJECT_REASON_INVALID_CHANNEL, message="unknown exchange 'nowhere'")
    hub.on_response(pb.MultiplexResponse(ref=sent[-1].ref, rejected=rejected))
    assert done.results == [(ErrorCode.INVALID_CHANNEL, "unknown exchange 'nowhere'")]
    assert a.channels == {} and hub.routes == {}


def test_after_a_lost_stream_every_channel_resumes_from_the_last_seq_seen(
    hub: Hub, sent: list[pb.MultiplexRequest]
) -> None:
    a = Client(FakeSink())
    join(hub, a, {BTC: BTC, ETH: ETH})
    hub.on_response(subscribed(sent[0].ref, BTC, ETH))
    hub.attach(a)
    hub.on_response(event(BTC, 5))
    hub.on_disconnected()
    hub.on_connected()
    resubscribe = sent[-1]
    assert list(resubscribe.subscribe) == [BTC, ETH] and dict(resubscribe.resume_from) == {BTC: 5}
    hub.on_response(event(BTC, 5, ref=resubscribe.ref))  # overlap: not delivered twice
    hub.on_response(event(BTC, 6, ref=resubscribe.ref))
    hub.on_response(subscribed(resubscribe.ref, BTC, ETH))
    hub.on_response(event(BTC, 7))
    assert [m["seq"] for m in a.sink.messages() if "seq" in m] == [5, 6, 7]  # type: ignore[attr-defined]


def test_a_join_that_falls_too_far_behind_is_failed(hub: Hub, sent: list[pb.MultiplexRequest]) -> None:
    a, b = Client(FakeSink()), Client(FakeSink())
    join(hub, a, {BTC: BTC})
    hub.on_response(subscribed(sent[0].ref, BTC))
    hub.attach(a)
    join(hub, b, {BTC: BTC}, resume={BTC: 1})
    for seq in range(2, MAX_BACKLOG_FRAMES + 3):
        hub.on_response(event(BTC, seq))
    assert b.sink.failed == 4009  # type: ignore[attr-defined]
    assert a.sink.failed is None  # type: ignore[attr-defined]


def test_a_batch_of_live_events_is_one_write_per_client_in_seq_order(hub: Hub, sent: list[pb.MultiplexRequest]) -> None:
    a = Client(FakeSink())
    join(hub, a, {BTC: BTC, ETH: ETH})
    hub.on_response(subscribed(sent[0].ref, BTC, ETH))
    hub.attach(a)
    batch = pb.EventBatch(events=[event(BTC, 1).event, event(ETH, 1).event, event(BTC, 2).event])
    hub.on_response(pb.MultiplexResponse(events=batch))
    assert len(a.sink.live) == 2  # type: ignore[attr-defined]
    btc, eth = a.sink.live  # type: ignore[attr-defined]
    assert [json.loads(p)["seq"] for p in _split(btc)] == [1, 2]
    assert [json.loads(p)["channel"] for p in _split(eth)] == [ETH]


def _split(chunk: bytes) -> list[bytes]:
    """The payloads of the frames in ``chunk`` (each under 64 KiB here)."""
    out = []
    while chunk:
        length, start = chunk[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(chunk[2:4], "big"), 4
        out.append(chunk[start : start + length])
        chunk = chunk[start + length :]
    return out


def test_a_resume_deeper_than_the_backlog_gets_the_newest_events_after_one_gap(
    hub: Hub, sent: list[pb.MultiplexRequest]
) -> None:
    """A client 7,000 events behind (history keeps 10,000) used to be closed 4009, and resumed from the same
    seq on every reconnect. It now gets the newest MAX_BACKLOG_FRAMES events after an explicit gap."""
    client = Client(FakeSink())
    done = join(hub, client, {"prices:BTC-USD": BTC}, resume={"prices:BTC-USD": 100})
    hub.on_response(subscribed(sent[-1].ref, BTC))
    result = done.results[0][0]
    assert isinstance(result, Join)
    ref = hub.replay_request(result).ref
    last = 100 + MAX_BACKLOG_FRAMES + 2_000
    replay(hub, result, *(event(BTC, seq, ref=ref) for seq in range(101, last + 1)), subscribed(ref, BTC))
    assert client.sink.failed is None  # type: ignore[attr-defined]
    gap, *events = (json.loads(_payload(f)) for f in result.backlog)
    first_kept = last - MAX_BACKLOG_FRAMES + 1
    assert gap == {
        "type": "resume_gap",
        "channel": "prices:BTC-USD",
        "requested_seq": 100,
        "first_available_seq": first_kept,
    }
    assert [m["seq"] for m in events] == list(range(first_kept, last + 1))
