"""API keys as the core knows them: tiers, their limits, and a stored key's record (never the key or its hash).

Pure data. Generating, hashing, storing and authenticating keys is
``core.adapters.apikeys``; the rpc codec maps a record to ``ApiKey``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType


class KeyTier(enum.StrEnum):
    FREE = "free"
    PRO = "pro"
    INTERNAL = "internal"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class TierLimits:
    """Limits of one tier; :data:`UNLIMITED` (0) means no limit."""

    requests_per_minute: int
    max_ws_connections: int


UNLIMITED = 0
FREE_REQUESTS_PER_MINUTE = 1_000
PRO_REQUESTS_PER_MINUTE = 10_000
FREE_MAX_WS_CONNECTIONS = 5
PRO_MAX_WS_CONNECTIONS = 20
TIER_LIMITS: Mapping[KeyTier, TierLimits] = MappingProxyType(
    {
        KeyTier.FREE: TierLimits(FREE_REQUESTS_PER_MINUTE, FREE_MAX_WS_CONNECTIONS),
        KeyTier.PRO: TierLimits(PRO_REQUESTS_PER_MINUTE, PRO_MAX_WS_CONNECTIONS),
        KeyTier.INTERNAL: TierLimits(UNLIMITED, UNLIMITED),
        KeyTier.ADMIN: TierLimits(UNLIMITED, UNLIMITED),
    }
)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored key as anyone may see it: no key, no hash."""

    id: int
    name: str
    tier: KeyTier
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def limits(self) -> TierLimits:
        return TIER_LIMITS[self.tier]
