"""Helpers for the venue protocol unit tests."""

from __future__ import annotations

import pytest

from core.adapters.venues.base import VenueError, VenueProtocol


def parse_error(protocol: VenueProtocol, frame: str | bytes, now_ms: int) -> VenueError:
    """The :class:`VenueError` that ``protocol`` raises for ``frame`` (the test fails if it raises none)."""
    with pytest.raises(VenueError) as caught:
        protocol.parse(frame, now_ms)
    return caught.value
