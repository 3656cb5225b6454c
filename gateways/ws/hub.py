"""The fan-out hub: every client's channels over one multiplexed core stream, reference-counted. Sans-I/O.

The hub never awaits. The upstream runner (``upstream.py``) feeds it the
core's ``MultiplexResponse`` messages (:meth:`Hub.on_response`) and tells it
when the stream is lost or back; the hub hands ``MultiplexRequest`` messages
to its ``send`` callback and writes frames to client *sinks*.

- **Reference counting.** A :class:`Route` is one canonical channel. The first
  client on it subscribes upstream; the last one leaving unsubscribes. A
  client joining a channel the core already carries, without a resume, is
  attached at once with no round trip.
- **Serialise once.** An event's ``data`` is projected and rendered to JSON
  once, its envelope and WebSocket frame once per *name* clients used for the
  channel (``prices:BTC-USD`` and ``prices:sim:BTC-USD`` are one route), and
  that frame is written to every client's transport.
- **Joining without a gap or duplicate.** A subscribe that goes upstream (a
  new channel, or a resume) is *gated*: the live events that arrive from then
  on collect in its backlog. A new channel is subscribed on the shared stream
  without resume. A resume's replay never travels on the shared stream, where
  it would hold back every other client's live events: once the shared stream
  carries the join's channels, the caller fetches the replay on a stream of
  its own (:meth:`Hub.on_replay`, ``session.py``), and :meth:`Hub.finish`
  keeps the live events above the last replayed seq. The client gets its
  acknowledgement, then the backlog, then joins the route.
- **Core restarts.** When the stream is lost, every carried channel is
  subscribed again on the new stream with ``resume_from`` = the last seq the
  hub saw, so the replay fills the hole; history that no longer reaches back
  reaches the clients as a ``resume_gap`` message.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from common.projection import to_public
from gateways.ws import protocol
from gateways.ws.protocol import ErrorCode
from perseus.marketdata.v1 import stream_service_pb2 as pb

logger = logging.getLogger(__name__)

MAX_BACKLOG_FRAMES = 5_000
RESUBSCRIBE_BATCH = 50
REJECT_CODES: dict[int, ErrorCode] = {
    pb.REJECT_REASON_INVALID_CHANNEL: ErrorCode.INVALID_CHANNEL,
    pb.REJECT_REASON_CHANNEL_LIMIT: ErrorCode.SUBSCRIPTION_LIMIT,
}


class Sink(Protocol):
    """One client connection as the hub sees it."""

    def deliver(self, frames: bytes, now: float, count: int = 1) -> None:
        """``count`` live events' frames: written, skipped or the client closed, by the backpressure rule."""

    def send(self, frame: bytes) -> None:
        """A control message (acknowledgement, error, resume gap), written unless the client is gone."""

    def fail(self, code: int, reason: str) -> None:
        """Close the client (e.g. 4009) and release it."""


@dataclass(eq=False, slots=True)
class Route:
    canonical: str
    names: dict[str, set[Sink]] = field(default_factory=dict)
    members: int = 0  # clients holding the channel, attached or joining
    carried: bool = False  # the core confirmed it on the current stream
    last_seq: int = 0
    gates: list[Join] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class Join:
    """One client's subscribe in progress; after ``Subscribed`` its backlog still has to be written."""

    ref: int
    client: Client
    names: dict[str, str]  # canonical -> the client's name, for the channels that went upstream
    resume: dict[str, int]  # canonical -> last seq the client saw
    acked: list[str]  # every name the acknowledgement lists, in message order
    done: Callable[[Join | ErrorCode | None, str], None]
    replay_last: dict[str, int] = field(default_factory=dict)
    replayed: deque[tuple[str, int, bytes]] = field(default_factory=deque)  # (canonical, seq, frame)
    trimmed: dict[str, int] = field(default_factory=dict)  # canonical -> newest replayed seq dropped (too deep)
    gaps: dict[str, tuple[int, int]] = field(default_factory=dict)  # canonical -> the core's (requested, first)
    notices: list[bytes] = field(default_factory=list)  # gap frames of a core restart while subscribing
    live: list[tuple[str, int, bytes]] = field(default_factory=list)
    backlog: deque[bytes] = field(default_factory=deque)
    subscribed: bool = False
    upstream: list[str] = field(default_factory=list)  # the channels the shared stream must subscribe (no resume)
    carried: bool = False  # the shared stream carries every channel of the join: its replay may be fetched


@dataclass(slots=True)
class Lag:
    """Publish (the core's ``publish_time``) to fan-out, as the gateway sees it: count, sum and maximum."""

    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)


@dataclass(slots=True)
class Client:
    """What the hub keeps per connection: canonical channel -> the name it was subscribed under."""

    sink: Sink
    channels: dict[str, str] = field(default_factory=dict)
    join: Join | None = None


class Hub:
    def __init__(self, send: Callable[[pb.MultiplexRequest], None], *, clock: Callable[[], float] = time.monotonic):
        self._send = send
        self._clock = clock
        self._routes: dict[str, Route] = {}
        self._joins: dict[int, Join] = {}
        self._resubscribes: dict[int, list[str]] = {}
        self._refs = itertools.count(1)
        self.connected = False
        self.events = 0
        self.lag = Lag()

    @property
    def routes(self) -> dict[str, Route]:
        return self._routes

    # --- clients ------------------------------------------------------------------------------

    def subscribe(
        self,
        client: Client,
        channels: dict[str, str],
        resume: dict[str, int],
        done: Callable[[Join | ErrorCode | None, str], None],
    ) -> None:
        """Join ``channels`` (name -> canonical). ``done`` gets None (joined), a Join whose backlog the
        caller writes and then :meth:`attach` es, or an error code and message (nothing changed)."""
        upstream: dict[str, str] = {}
        resume_by_canonical: dict[str, int] = {}
        local: list[tuple[str, str]] = []
        for name, canonical in channels.items():
            if canonical in client.channels or canonical in upstream:
                continue  # a duplicate: acknowledged again, delivered once
            route = self._routes.get(canonical)
            if name in resume:
                resume_by_canonical[canonical] = resume[name]
            if route is not None and route.carried and canonical not in resume_by_canonical:
                local.append((name, canonical))
            else:
                upstream[canonical] = name
        for name, canonical in local:
            self._route(canonical).members += 1
            client.channels[canonical] = name
            self._routes[canonical].names.setdefault(name, set()).add(client.sink)
        acked = list(channels)
        if not upstream:
            client.sink.send(protocol.text_frame(protocol.subscribed_message(acked)))
            done(None, "")
            return
        join = Join(next(self._refs), client, upstream, resume_by_canonical, acked, done)
        for canonical, name in upstream.items():
            route = self._route(canonical)
            if not route.carried:
                join.upstream.append(canonical)
            route.members += 1
            route.gates.append(join)
            client.channels[canonical] = name
        client.join = join
        if not join.upstream:  # resumes of channels already carried: straight to the replay
            join.carried = True
            done(join, "")
            return
        self._joins[join.ref] = join
        if self.connected:
            self._send(self._join_request(join))

    def attach(self, client: Client) -> None:
        """The client's backlog is written: it now receives the live events of its new channels."""
        join, client.join = client.join, None
        if join is None:
            return
        for canonical, name in join.names.items():
            route = self._routes.get(canonical)
            if route is not None:
                _discard(route.gates, join)
                route.names.setdefault(name, set()).add(client.sink)

    def unsubscribe(self, client: Client, channels: dict[str, str]) -> None:
        """Leave ``channels`` (name -> canonical); the acknowledgement lists every name asked for."""
        self._leave(client, [c for c in dict.fromkeys(channels.values()) if c in client.channels])
        client.sink.send(protocol.text_frame(protocol.unsubscribed_message(list(channels))))

    def release(self, client: Client) -> None:
        """The connection is gone: drop everything it held."""
        if client.join is not None:
            self._joins.pop(client.join.ref, None)
        self._leave(client, list(client.channels))
        client.join = None

    def _leave(self, client: Client, canonicals: Iterable[str]) -> None:
        gone: list[str] = []
        for canonical in canonicals:
            name = client.channels.pop(canonical)
            route = self._routes[canonical]
            sinks = route.names.get(name)
            if sinks is not None:
                sinks.discard(client.sink)
                if not sinks:
                    del route.names[name]
            if client.join is not None:
                _discard(route.gates, client.join)
                client.join.names.pop(canonical, None)
            route.members -= 1
            if route.members <= 0:
                del self._routes[canonical]
                gone.append(canonical)
        if gone and self.connected:
            self._send(pb.MultiplexRequest(ref=next(self._refs), unsubscribe=gone))

    def _route(self, canonical: str) -> Route:
        route = self._routes.get(canonical)
        if route is None:
            route = self._routes[canonical] = Route(canonical)
        return route

    def _join_request(self, join: Join) -> pb.MultiplexRequest:
        return pb.MultiplexRequest(ref=join.ref, subscribe=join.upstream)

    def replay_request(self, join: Join) -> pb.MultiplexRequest:
        """The request of a join's own replay stream: its resumed channels, from the seqs the client saw."""
        return pb.MultiplexRequest(ref=join.ref, subscribe=list(join.resume), resume_from=join.resume)

    def on_replay(self, join: Join, response: pb.MultiplexResponse) -> bool | tuple[ErrorCode, str]:
        """One response of the join's replay stream: True once the replay is complete (then :meth:`finish`),
        an error code and message if the core refused it, False while it goes on. Live events the replay
        stream sends after it (ref 0) are the shared stream's business and ignored."""
        kind = response.WhichOneof("kind")
        if response.ref != join.ref:
            return False
        if kind == "event":
            self._replayed(join, response.event)
        elif kind == "events":
            for event in response.events.events:
                self._replayed(join, event)
        elif kind == "resume_gap":
            gap = response.resume_gap
            if gap.channel in join.names:
                requested, first = join.gaps.get(gap.channel, (gap.requested_seq, 0))
                join.gaps[gap.channel] = (requested, max(first, gap.first_available_seq))
        elif kind == "subscribed":
            return True
        elif kind == "rejected":
            code = REJECT_CODES.get(response.rejected.reason, ErrorCode.INVALID_MESSAGE)
            return code, response.rejected.message or "the resume was refused"
        return False

    # --- the core stream ----------------------------------------------------------------------

    def on_connected(self) -> None:
        """A new stream is open: carry every channel again (resuming from the last seq seen), then the joins."""
        self.connected = True
        self._resubscribes.clear()
        canonicals = list(self._routes)
        for start in range(0, len(canonicals), RESUBSCRIBE_BATCH):
            batch = canonicals[start : start + RESUBSCRIBE_BATCH]
            resume = {c: self._routes[c].last_seq for c in batch if self._routes[c].last_seq > 0}
            ref = next(self._refs)
            self._resubscribes[ref] = batch
            self._send(pb.MultiplexRequest(ref=ref, subscribe=batch, resume_from=resume))
        for join in self._joins.values():
            join.replayed.clear()
            join.replay_last.clear()
            join.trimmed.clear()
            join.gaps.clear()
            self._send(self._join_request(join))

    def on_disconnected(self) -> None:
        self.connected = False
        for route in self._routes.values():
            route.carried = False

    def on_response(self, response: pb.MultiplexResponse) -> None:
        kind = response.WhichOneof("kind")
        ref = response.ref
        if kind == "event":
            join = self._joins.get(ref) if ref else None
            if join is not None and not join.subscribed:
                self._replayed(join, response.event)
            else:
                self._live((response.event,))
        elif kind == "events":
            join = self._joins.get(ref) if ref else None
            if join is not None and not join.subscribed:
                for event in response.events.events:
                    self._replayed(join, event)
            else:
                self._live(response.events.events)
        elif kind == "subscribed":
            self._subscribed(ref, list(response.subscribed.channels))
        elif kind == "resume_gap":
            self._gap(ref, response.resume_gap)
        elif kind == "rejected":
            self._rejected(ref, response.rejected)

    def _live(self, events: Iterable[pb.StreamEvent]) -> None:
        """Live events (one, or an ``EventBatch``): per channel, one chunk of frames per name, one write per client."""
        by_channel: dict[str, list[pb.StreamEvent]] = {}
        for event in events:
            by_channel.setdefault(event.channel, []).append(event)
        for channel, batch in by_channel.items():
            route = self._routes.get(channel)
            if route is not None:
                self._fan_out(route, batch)

    def _fan_out(self, route: Route, batch: list[pb.StreamEvent]) -> None:
        fresh: list[tuple[str, int, bytes]] = []
        for event in batch:
            if event.seq <= route.last_seq:
                continue  # already delivered (a resubscribe's replay overlaps)
            route.last_seq = event.seq
            self.events += 1
            event_type = event.WhichOneof("payload")
            if event_type is None:
                continue
            if event.HasField("publish_time"):
                self.lag.observe(time.time() - event.publish_time.seconds - event.publish_time.nanos / 1e9)
            fresh.append((event_type, event.seq, orjson.dumps(to_public(getattr(event, event_type)))))
        if not fresh:
            return
        now = self._clock()
        for name, sinks in route.names.items():
            chunk = b"".join(_frames(fresh, name))
            for sink in list(sinks):
                sink.deliver(chunk, now, len(fresh))
        for join in list(route.gates):
            joined = join.names.get(route.canonical)
            if joined is None:
                continue
            for (_, seq, _), frame in zip(fresh, _frames(fresh, joined), strict=True):
                if join.subscribed:
                    self._push(join, frame)
                else:
                    join.live.append((route.canonical, seq, frame))
                    if len(join.live) > MAX_BACKLOG_FRAMES:
                        join.client.sink.fail(protocol.CloseCode.TOO_SLOW, "too far behind while subscribing")

    def _replayed(self, join: Join, event: pb.StreamEvent) -> None:
        name = join.names.get(event.channel)
        event_type = event.WhichOneof("payload")
        if name is None or event_type is None:
            return
        data = orjson.dumps(to_public(getattr(event, event_type)))
        frame = protocol.text_frame(protocol.event_message(event_type, name, event.seq, data))
        join.replayed.append((event.channel, event.seq, frame))
        join.replay_last[event.channel] = max(join.replay_last.get(event.channel, 0), event.seq)
        if len(join.replayed) > MAX_BACKLOG_FRAMES:
            # A resume deeper than the gateway buffers for one client: keep the newest events and report the
            # oldest as a gap. Failing the client (4009) instead made it resume from the same seq, forever.
            canonical, seq, _ = join.replayed.popleft()
            join.trimmed[canonical] = seq

    def _push(self, join: Join, frame: bytes) -> None:
        join.backlog.append(frame)
        if len(join.backlog) > MAX_BACKLOG_FRAMES:
            join.client.sink.fail(protocol.CloseCode.TOO_SLOW, "too far behind while catching up")

    def _subscribed(self, ref: int, canonicals: list[str]) -> None:
        for canonical in canonicals:
            route = self._routes.get(canonical)
            if route is not None:
                route.carried = True
        if self._resubscribes.pop(ref, None) is not None:
            return
        join = self._joins.pop(ref, None)
        if join is None:
            return
        if canonicals != join.upstream:
            logger.error(
                "the core named the channels differently than the gateway (check PERSEUS_EXCHANGES)",
                extra={"fields": {"core": canonicals[:5], "gateway": join.upstream[:5]}},
            )
        join.carried = True
        if join.resume:
            join.done(join, "")  # the caller fetches the replay, then finish()
        else:
            self.finish(join)

    def finish(self, join: Join) -> None:
        """The join's channels are carried and its replay (if any) is in: acknowledge, and build its backlog
        (gaps, the replay, the live events above it); ``done`` gets the join, whose backlog the caller writes."""
        if join.client.join is not join:  # the client left or the join was undone meanwhile
            return
        join.subscribed = True
        for canonical in join.names:
            route = self._routes.get(canonical)
            if route is not None and route.last_seq == 0:  # a new route: resume it from what this client saw
                route.last_seq = join.replay_last.get(canonical, join.resume.get(canonical, 0))
        join.client.sink.send(protocol.text_frame(protocol.subscribed_message(join.acked)))
        join.backlog.extend(join.notices)
        join.backlog.extend(self._gap_frames(join))
        join.backlog.extend(frame for _, _, frame in join.replayed)
        for canonical, seq, frame in join.live:
            if seq > join.replay_last.get(canonical, join.resume.get(canonical, 0)):
                join.backlog.append(frame)
        join.replayed, join.live, join.notices = deque(), [], []
        join.done(join, "")

    @staticmethod
    def _gap_frames(join: Join) -> list[bytes]:
        """One ``resume_gap`` per channel whose replay misses events: the core's history did not reach back,
        or the replay was deeper than the gateway buffers (the oldest were dropped), whichever starts later."""
        frames = []
        for canonical in sorted(join.gaps.keys() | join.trimmed.keys()):
            requested, first = join.gaps.get(canonical, (join.resume.get(canonical, 0), 0))
            if canonical in join.trimmed:
                first = max(first, join.trimmed[canonical] + 1)
            gap = pb.ResumeGap(channel=canonical, requested_seq=requested, first_available_seq=first)
            frames.append(protocol.text_frame(protocol.resume_gap_message(join.names[canonical], to_public(gap))))
        return frames

    def _gap(self, ref: int, gap: pb.ResumeGap) -> None:
        public = to_public(gap)
        join = self._joins.get(ref)
        if join is not None:
            if gap.channel in join.names:
                join.gaps[gap.channel] = (gap.requested_seq, gap.first_available_seq)
            return
        route = self._routes.get(gap.channel)
        if route is None:
            return
        logger.warning("a channel's history did not reach back after the core stream was lost")
        for name, sinks in route.names.items():
            frame = protocol.text_frame(protocol.resume_gap_message(name, public))
            for sink in list(sinks):
                sink.send(frame)
        for join in route.gates:
            joined = join.names.get(gap.channel)
            if joined is not None:
                frame = protocol.text_frame(protocol.resume_gap_message(joined, public))
                (join.backlog if join.subscribed else join.notices).append(frame)

    def _rejected(self, ref: int, rejected: pb.Rejected) -> None:
        batch = self._resubscribes.pop(ref, None)
        if batch is not None:
            logger.error("the core refused to carry channels again (%s); subscribing without resume", rejected.message)
            carried = [c for c in batch if c in self._routes]
            for canonical in carried:
                self._routes[canonical].last_seq = 0
            if carried and self.connected:
                self._send(pb.MultiplexRequest(ref=next(self._refs), subscribe=carried))
            return
        join = self._joins.pop(ref, None)
        if join is None:
            return
        self.refuse(join)
        code = REJECT_CODES.get(rejected.reason, ErrorCode.INVALID_MESSAGE)
        join.done(code, rejected.message or "the subscription was refused")

    def refuse(self, join: Join) -> None:
        """Undo a join that failed or timed out: the client keeps what it had before."""
        self._joins.pop(join.ref, None)
        client = join.client
        if client.join is join:
            canonicals = list(join.names)
            self._leave(client, canonicals)
            client.join = None


def _frames(fresh: list[tuple[str, int, bytes]], name: str) -> list[bytes]:
    return [protocol.text_frame(protocol.event_message(t, name, seq, data)) for t, seq, data in fresh]


def _discard(items: list[Join], item: Join) -> None:
    try:
        items.remove(item)
    except ValueError:
        pass
