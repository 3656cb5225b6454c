"""Subscriptions to public streams: validation, resume from a seq, then live events with no gap or duplicate.

The order that makes a resume exact: subscribe to the live channels first
(the hub confirms the subscription), then read each channel's current seq and
its history after the requested seq; live events that arrive meanwhile wait in
the stream's queue and every one with a seq at or below the last delivered is
dropped. A live event whose seq jumps past ``last + 1`` (or a resync from the
hub after a reconnect) is filled in from the history first; what the history
no longer holds is reported as a :class:`ResumeGap`, never skipped silently.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass

from core.adapters.stream_history import REPLAY_BATCH, StreamHistory
from core.adapters.stream_hub import RESYNC, StreamHub
from core.domain.channels import Channel, InvalidChannel, parse_channel
from core.domain.errors import InvalidArgument

MAX_CHANNELS = 50
# Short channel names (``prices:BTC-USD``) mean this exchange when the core has none configured
# (pw-host mode); in exchange mode the default is the first of PERSEUS_EXCHANGES.
DEFAULT_STREAM_EXCHANGE = "sim"


def default_stream_exchange(configured: Sequence[str]) -> str:
    return configured[0] if configured else DEFAULT_STREAM_EXCHANGE


@dataclass(frozen=True, slots=True)
class Subscribed:
    channels: list[str]


@dataclass(frozen=True, slots=True)
class ResumeGap:
    channel: str
    requested_seq: int
    first_available_seq: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event: ``payload`` is the published ``StreamEvent`` bytes, without its ``seq``."""

    seq: int
    payload: bytes


Item = Subscribed | ResumeGap | Delivery


@dataclass(slots=True)
class _Stream:
    channel: Channel
    public: str
    internal: str
    resume: int | None
    last: int = 0


class Streams:
    def __init__(
        self, hub: StreamHub, history: StreamHistory, *, default_exchange: str, exchanges: Collection[str]
    ) -> None:
        self._hub = hub
        self._history = history
        self._default = default_exchange
        self._exchanges = frozenset(exchanges) | {default_exchange}

    def _streams(self, names: Sequence[str], resume_from: Mapping[str, int]) -> list[_Stream]:
        if not names:
            raise InvalidArgument("name at least one channel")
        if len(names) > MAX_CHANNELS:
            raise InvalidArgument(f"at most {MAX_CHANNELS} channels per stream (got {len(names)})")
        streams: dict[Channel, _Stream] = {}
        for name in names:
            channel = parse_channel(name, exchanges=self._exchanges).resolve(self._default)
            if channel not in streams:
                public = channel.public_name(self._default)
                streams[channel] = _Stream(channel, public, self._history.channel_name(channel), None)
        for name, seq in resume_from.items():
            channel = parse_channel(name, exchanges=self._exchanges).resolve(self._default)
            stream = streams.get(channel)
            if stream is None:
                raise InvalidChannel(name, "resume_from names a channel that is not in channels")
            stream.resume = seq
        return list(streams.values())

    async def subscribe(self, names: Sequence[str], resume_from: Mapping[str, int]) -> AsyncIterator[Item]:
        """``Subscribed``, then per resumed channel what it missed, then live events, until cancelled."""
        streams = self._streams(names, resume_from)
        by_internal = {s.internal: s for s in streams}
        async with self._hub.subscription(list(by_internal)) as subscriber:
            current = await self._history.current_seqs([s.channel for s in streams])
            for stream, seq in zip(streams, current, strict=True):
                if stream.resume is not None and stream.resume > seq:
                    raise InvalidArgument(
                        f"resume seq {stream.resume} of channel {stream.public!r} is from the future "
                        f"(the channel is at seq {seq})"
                    )
                stream.last = seq if stream.resume is None else stream.resume
            yield Subscribed([s.public for s in streams])
            for stream in streams:
                if stream.resume is not None:
                    async for item in self._catch_up(stream):
                        yield item
            while True:
                internal, seq, payload = await subscriber.get()
                stream = by_internal[internal]
                if seq == RESYNC or seq > stream.last + 1:
                    async for item in self._catch_up(stream):
                        yield item
                if seq <= stream.last:
                    continue
                if seq > stream.last + 1:  # neither the history nor the live channel has the events between
                    yield ResumeGap(stream.public, stream.last, seq)
                stream.last = seq
                yield Delivery(seq, payload)

    async def _catch_up(self, stream: _Stream) -> AsyncIterator[Item]:
        """Everything the history holds after ``stream.last``, preceded by a ResumeGap if it starts later."""
        first = True
        while True:
            entries = await self._history.after(stream.channel, stream.last)
            for seq, payload in entries:
                if first and seq > stream.last + 1:
                    yield ResumeGap(stream.public, stream.last, seq)
                first = False
                stream.last = seq
                yield Delivery(seq, payload)
            if len(entries) < REPLAY_BATCH:
                return
