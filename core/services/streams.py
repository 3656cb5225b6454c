"""Stream sessions: channels added and removed on an open stream, resume by seq, then live events
with no gap or duplicate that the subscriber is not told about.

A :class:`StreamSession` is one open stream (a ``Subscribe`` or ``Multiplex``
call). It holds a :class:`~core.services.ports.Subscription` of the
process's one hub and, per channel, the last seq it delivered.

The order that makes a resume exact: subscribe to the live channels first
(the hub confirms the subscription), then read each channel's current seq and
the history after the requested seq. Live events that arrive meanwhile wait in
the session's queue, and every one with a seq at or below the last delivered
is dropped. A live event whose seq jumps past ``last + 1`` (or a resync from
the hub after a reconnect) is filled in from the history first; what the
history no longer holds is reported as a :class:`ResumeGap`, never skipped
silently.

Requests of a multiplexed stream travel through the same queue as its events
(:meth:`StreamSession.request`), so answers and events leave in one order
(:meth:`StreamSession.batches`): a
replay for a channel the stream already carries covers exactly the seqs up to
the stream's position on that channel, and the live events after it follow.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.domain.channels import (
    ALL_SOURCES,
    ALL_SYMBOLS,
    Channel,
    ChannelFamily,
    InvalidChannel,
    all_prices_channel,
    explicit_name,
    parse_channel,
)
from core.domain.errors import DomainError, InvalidArgument, Unavailable
from core.services.ports import RESYNC, Hub, Subscription

MAX_CHANNELS = 50  # per Subscribe stream, as per WebSocket connection
MAX_MULTIPLEX_CHANNELS = 20_000  # per Multiplex stream: a gateway carries every channel of its clients
MULTIPLEX_QUEUE_SIZE = 50_000
MAX_PENDING_REQUESTS = 1_000
MAX_BATCH = 256  # items handed to the RPC edge at once (events it may send in one message)
REPLAY_BATCH = 500  # history entries read at once; fewer means the history has no more
# Events one subscribe request may replay, its channels together (issue 16): a resume from seq 0 on 20 channels
# of 10,000 entries each read 200,000 events. Each channel keeps its newest events within a fair share of this;
# what is cut is reported as a ResumeGap first, never skipped silently.
MAX_REPLAY_EVENTS = 5_000
# Short channel names (``prices:BTC-USD``) mean this exchange when the core has none configured
# (pw-host mode); in exchange mode the default is the first of PERSEUS_EXCHANGES.
DEFAULT_STREAM_EXCHANGE = "sim"


def default_stream_exchange(configured: Sequence[str]) -> str:
    return configured[0] if configured else DEFAULT_STREAM_EXCHANGE


class RejectReason(enum.IntEnum):
    """Mirrors ``RejectReason`` of stream_service.proto."""

    INVALID_CHANNEL = 1
    CHANNEL_LIMIT = 2
    INVALID_RESUME = 3
    UNAVAILABLE = 4
    EMPTY = 5


class Rejection(InvalidArgument):
    """A request that changed nothing; ``reason`` says why."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Subscribed:
    ref: int
    channels: list[str]


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    ref: int
    channels: list[str]


@dataclass(frozen=True, slots=True)
class Rejected:
    ref: int
    reason: RejectReason
    message: str


@dataclass(frozen=True, slots=True)
class ResumeGap:
    ref: int
    channel: str
    requested_seq: int
    first_available_seq: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event: ``payload`` is the published ``StreamEvent`` bytes, without its ``seq``."""

    ref: int
    seq: int
    payload: bytes


Item = Subscribed | Unsubscribed | Rejected | ResumeGap | Delivery


@dataclass(frozen=True, slots=True)
class _Request:
    ref: int
    subscribe: list[str]
    resume_from: dict[str, int]
    unsubscribe: list[str]


@dataclass(frozen=True, slots=True)
class _Abort:
    error: DomainError


class History(Protocol):
    """A stream's sequence counter and capped history (``core.adapters.stream_history``); reads raise
    ``Unavailable`` when Redis cannot answer."""

    def channel_name(self, channel: Channel) -> str:
        """The hub's internal channel of a resolved public channel."""
        ...

    async def current_seqs(self, channels: Sequence[Channel]) -> list[int | None]:
        """The last seq published on each channel (None: no counter, nothing published yet)."""
        ...

    async def after(self, channel: Channel, seq: int, count: int) -> list[tuple[int, bytes]]:
        """Up to ``count`` history entries with a seq greater than ``seq``, oldest first."""
        ...

    async def listening(self, internal_channels: Collection[str]) -> None:
        """Mark the on-demand streams among ``internal_channels`` listened (published from now on; a stream
        that was not jumps its seq first, so a resume across the silence is told the gap)."""
        ...


@dataclass(slots=True)
class _Position:
    channel: Channel
    name: str  # canonical explicit public name
    last: int = 0
    # The channel had no events when the stream subscribed: its first event, live or from the
    # history, is where the stream starts, with no gap before it.
    fresh: bool = False


def fair_shares(needs: Mapping[str, int], budget: int) -> dict[str, int]:
    """How much of ``budget`` each need gets: all of it when they fit; else the small needs whole and the rest an
    equal share (water-filling), so one deep channel cannot take the budget of the others.

    >>> fair_shares({"a": 10, "b": 3000, "c": 9000}, 5000)
    {'a': 10, 'b': 2495, 'c': 2495}
    """
    shares: dict[str, int] = {}
    left, remaining = budget, dict(needs)
    while remaining:
        fair = left // len(remaining)
        small = {name: need for name, need in remaining.items() if need <= fair}
        if not small:
            extra = left - fair * len(remaining)
            for i, name in enumerate(remaining):
                shares[name] = fair + (1 if i < extra else 0)
            break
        for name, need in small.items():
            shares[name] = need
            left -= need
            del remaining[name]
    return shares


class Streams:
    def __init__(self, hub: Hub, history: History, *, default_exchange: str, exchanges: Collection[str]) -> None:
        self.hub = hub
        self.history = history
        self._default = default_exchange
        self._exchanges = frozenset(exchanges) | {default_exchange, ALL_SOURCES}
        self._every_price = explicit_name(all_prices_channel(ALL_SYMBOLS))

    def resolve(self, name: str) -> Channel:
        """The channel ``name`` means; ``prices:all:{SYMBOL}`` (every source of a symbol) and ``prices:all:*``
        (every price update) are prices channels only."""
        if name.strip().lower() == self._every_price:
            return all_prices_channel(ALL_SYMBOLS)
        channel = parse_channel(name, exchanges=self._exchanges).resolve(self._default)
        if channel.exchange == ALL_SOURCES and channel.family is not ChannelFamily.PRICES:
            raise InvalidChannel(name, f"only prices channels take {ALL_SOURCES!r} for the exchange")
        return channel

    def open(self, *, max_channels: int = MAX_CHANNELS, queue_size: int | None = None) -> StreamSession:
        return StreamSession(self, self.hub.subscriber(queue_size), max_channels=max_channels)


class StreamSession:
    def __init__(self, streams: Streams, subscriber: Subscription, *, max_channels: int) -> None:
        self._streams = streams
        self._history = streams.history
        self._hub = streams.hub
        self._subscriber = subscriber
        self._max_channels = max_channels
        self._positions: dict[str, _Position] = {}  # by internal channel name
        self._pending = 0

    @property
    def channel_count(self) -> int:
        return len(self._positions)

    def close(self) -> None:
        """Give every channel back to the hub (idempotent)."""
        self._positions.clear()
        self._hub.release_all(self._subscriber)

    def request(self, ref: int, subscribe: Sequence[str], resume_from: Mapping[str, int], unsub: Sequence[str]) -> None:
        """Queue a change of channels; its answers come out of :meth:`batches` in order with the events."""
        self._pending += 1
        if self._pending > MAX_PENDING_REQUESTS:
            raise InvalidArgument(f"more than {MAX_PENDING_REQUESTS} requests waiting; slow down")
        self._subscriber.put_control(_Request(ref, list(subscribe), dict(resume_from), list(unsub)))

    def abort(self, error: DomainError) -> None:
        """End the stream with ``error`` once what is queued before it is out."""
        self._subscriber.put_control(_Abort(error))

    async def subscribe(
        self, ref: int, names: Sequence[str], resume_from: Mapping[str, int], *, ack_first: bool = False
    ) -> AsyncIterator[Item]:
        """Add ``names``: the replay of resumed channels (tagged ``ref``), then ``Subscribed``
        (first instead, with ``ack_first``). Raises :class:`Rejection` having changed nothing."""
        if not names:
            raise Rejection(RejectReason.EMPTY, "name at least one channel")
        resolved = [self._resolve(name) for name in names]
        by_internal: dict[str, Channel] = {}
        for channel in resolved:
            by_internal.setdefault(self._internal(channel), channel)
        resume: dict[str, int] = {}
        for name, seq in resume_from.items():
            internal = self._internal(self._resolve(name))
            if internal not in by_internal:
                raise Rejection(RejectReason.INVALID_RESUME, f"resume_from names {name!r}, which is not subscribed")
            resume[internal] = seq
        new = [internal for internal in by_internal if internal not in self._positions]
        wanted = len(self._positions) + len(new)
        if wanted > self._max_channels:
            raise Rejection(
                RejectReason.CHANNEL_LIMIT, f"at most {self._max_channels} channels per stream (got {wanted})"
            )
        try:
            await self._hub.acquire(self._subscriber, new)
            await self._history.listening(new)  # before the seqs are read: an on-demand stream's may jump
            current = await self._history.current_seqs([by_internal[i] for i in by_internal])
        except Unavailable as exc:
            self._hub.release(self._subscriber, new)
            raise Rejection(RejectReason.UNAVAILABLE, str(exc)) from None
        for internal, at in zip(by_internal, current, strict=True):
            asked = resume.get(internal)
            if asked is not None and at is not None and asked > at:
                self._hub.release(self._subscriber, new)
                raise Rejection(
                    RejectReason.INVALID_RESUME,
                    f"resume seq {asked} of channel {explicit_name(by_internal[internal])!r} is from the future "
                    f"(the channel is at seq {at})",
                )
        subscribed = Subscribed(ref, [explicit_name(channel) for channel in resolved])
        if ack_first:
            yield subscribed
        needs: dict[str, int] = {}
        for internal, at in zip(by_internal, current, strict=True):
            asked = resume.get(internal)
            if asked is not None:
                held = self._positions.get(internal)
                end = held.last if held is not None else (at or 0)
                needs[internal] = max(0, end - asked)
        allowed = fair_shares(needs, MAX_REPLAY_EVENTS)
        for internal, at in zip(by_internal, current, strict=True):
            asked = resume.get(internal)
            position = self._positions.get(internal)
            channel = by_internal[internal]
            cut = needs.get(internal, 0) - allowed.get(internal, 0)
            if asked is not None and cut > 0:  # beyond the request's replay budget: the oldest are a gap
                yield ResumeGap(ref, explicit_name(channel), asked, asked + cut + 1)
            if position is None:
                start = asked + cut if asked is not None else (at or 0)
                fresh = asked is None and at is None
                position = self._positions[internal] = _Position(channel, explicit_name(channel), start, fresh)
                if asked is not None:
                    async for item in self._catch_up(position, ref, up_to=None):
                        yield item
            elif asked is not None and asked < position.last:  # already live here: replay up to the live position
                replay = _Position(position.channel, position.name, asked + cut)
                async for item in self._catch_up(replay, ref, up_to=position.last):
                    yield item
        if not ack_first:
            yield subscribed

    def unsubscribe(self, ref: int, names: Sequence[str]) -> Unsubscribed:
        resolved = [self._resolve(name) for name in names]
        internals = [self._internal(channel) for channel in resolved]
        for internal in internals:
            self._positions.pop(internal, None)
        self._hub.release(self._subscriber, internals)
        return Unsubscribed(ref, [explicit_name(channel) for channel in resolved])

    async def batches(self) -> AsyncIterator[list[Item]]:
        """Live events of every channel held, and the answers to queued requests, until the stream ends:
        each batch is everything that was ready when the stream woke (at most ``MAX_BATCH`` items), so a
        stream under load sends fewer, larger messages and a quiet one sends each event at once."""
        get, ready = self._subscriber.get, self._subscriber.get_nowait
        positions = self._positions
        out: list[Item] = []
        item = await get()
        while True:
            if isinstance(item, tuple):
                internal, seq, payload = item
                position = positions.get(internal)
                if position is not None:
                    if position.fresh and seq != RESYNC:
                        position.fresh = False
                        position.last = seq - 1
                    if seq == RESYNC or seq > position.last + 1:
                        async for replayed in self._catch_up(position, 0, up_to=None):
                            out.append(replayed)
                    if seq > position.last + 1:  # neither the history nor the live channel has the events between
                        out.append(ResumeGap(0, position.name, position.last, seq))
                    if seq > position.last:
                        position.last = seq
                        out.append(Delivery(0, seq, payload))
            elif isinstance(item, _Request):
                self._pending -= 1
                async for answer in self._apply(item):
                    out.append(answer)
                    if len(out) >= MAX_BATCH:
                        yield out
                        out = []
            elif isinstance(item, _Abort):
                raise item.error
            if len(out) < MAX_BATCH and (item := ready()) is not None:
                continue
            if out:
                yield out
                out = []
            item = await get()

    async def _apply(self, request: _Request) -> AsyncIterator[Item]:
        if not request.subscribe and not request.unsubscribe:
            yield Rejected(request.ref, RejectReason.EMPTY, "name channels to subscribe or to unsubscribe")
            return
        try:
            if request.unsubscribe:
                answer = self.unsubscribe(request.ref, request.unsubscribe)
            if request.subscribe:
                async for item in self.subscribe(request.ref, request.subscribe, request.resume_from):
                    yield item
            if request.unsubscribe:
                yield answer
        except Rejection as exc:
            yield Rejected(request.ref, exc.reason, str(exc))

    async def _catch_up(self, position: _Position, ref: int, *, up_to: int | None) -> AsyncIterator[Item]:
        """What the history holds after ``position.last`` (up to seq ``up_to``), preceded by a ResumeGap
        if it starts later than the next seq; ``position.last`` follows."""
        first = True
        while up_to is None or position.last < up_to:
            entries = await self._history.after(position.channel, position.last, REPLAY_BATCH)
            for seq, payload in entries:
                if up_to is not None and seq > up_to:
                    return
                if first and seq > position.last + 1 and not position.fresh:
                    yield ResumeGap(ref, position.name, position.last, seq)
                first = position.fresh = False
                position.last = seq
                yield Delivery(ref, seq, payload)
            if len(entries) < REPLAY_BATCH:
                if up_to is not None and position.last < up_to:  # the history lost the rest
                    yield ResumeGap(ref, position.name, position.last, up_to + 1)
                return

    def _resolve(self, name: str) -> Channel:
        try:
            return self._streams.resolve(name)
        except InvalidChannel as exc:
            raise Rejection(RejectReason.INVALID_CHANNEL, str(exc)) from None

    def _internal(self, channel: Channel) -> str:
        return self._history.channel_name(channel)
