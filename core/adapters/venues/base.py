"""The contract between a venue's pure protocol code and the shared connection runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.domain.market_events import MarketEvent


class VenueError(Exception):
    """The venue sent an error frame or a frame we cannot read; the runner logs it and reconnects
    when ``fatal`` (e.g. a rejected subscription), otherwise it skips the frame."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass(slots=True)
class Parsed:
    """What one received frame meant."""

    events: list[MarketEvent] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # frames to send back (e.g. an application-level pong)


class VenueProtocol(Protocol):
    """Pure, per-connection protocol state of one venue. A new instance is made for every connection."""

    name: str  # "coinbase", "binance", "kraken": used everywhere the data is labelled

    def url(self) -> str:
        """The WebSocket URL to connect to (the documented public endpoint unless overridden)."""
        ...

    def subscribe_frames(self) -> Sequence[str]:
        """Frames to send right after the connection opens."""
        ...

    def parse(self, frame: str | bytes, now_ms: int) -> Parsed:
        """Interpret one frame. Raises VenueError for error frames and unreadable input."""
        ...

    @property
    def idle_timeout_s(self) -> float:
        """With no frame for this long the connection is considered dead (the venue heartbeats faster)."""
        ...


EventSink = Callable[[Sequence[MarketEvent]], Awaitable[None]]
