"""The WebSocket venues by name: their protocol and the shared runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from core.adapters.venues.base import EventSink

VenueStart = Callable[[EventSink], Callable[[], Awaitable[None]]]


def websocket_venue(name: str, symbols: Sequence[str], url: str, clock_ms: Callable[[], int]) -> VenueStart:
    raise NotImplementedError(f"venue {name} is not wired yet")
