"""Plain domain records served by the core. Prices are Decimal, times are aware UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

# The connection of an exchange's venue feed (GetStatus ``venues``, the gateways' ``/health``).
VenueState = Literal["connecting", "connected", "reconnecting", "stopped"]


@dataclass(frozen=True, slots=True)
class Exchange:
    id: int
    name: str
    display_name: str
    simulated: bool
    last_heartbeat: datetime | None

    @property
    def online(self) -> bool:
        return self.last_heartbeat is not None


@dataclass(frozen=True, slots=True)
class Symbol:
    id: int
    exchange_id: int
    exchange: str
    symbol: str
    base: str
    quote: str
    active: bool


@dataclass(frozen=True, slots=True)
class VenueHealth:
    """One exchange's venue feed in this core: its connection state and when it last delivered a message."""

    exchange: str
    state: VenueState
    last_message_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DependencyHealth:
    name: str
    up: bool
    latency_ms: float
    detail: str = ""
