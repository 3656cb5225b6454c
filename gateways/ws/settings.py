"""The WebSocket gateway's own settings (beyond the shared ones), read once from ``PERSEUS_*``.

A bad value raises :class:`GatewaySettingsError` naming the variable, like the
shared settings, so ``perseus ws`` stops with one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gateways.common.settings import GatewaySettingsError
from gateways.ws.limits import MESSAGE_BURST, MESSAGE_RATE_PER_S, SLOW_CLIENT_GRACE_S

DEFAULT_EXCHANGE = "sim"
DEFAULT_HEARTBEAT_S = 30.0
DEFAULT_PING_TIMEOUT_S = 20.0
DEFAULT_LEASE_S = 30.0
DEFAULT_MAX_FRAME_BYTES = 16 * 1024
DEFAULT_KEY_RECHECK_S = 5.0
MAX_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class WsSettings:
    default_exchange: str = DEFAULT_EXCHANGE
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    ping_timeout_s: float = DEFAULT_PING_TIMEOUT_S
    lease_s: float = DEFAULT_LEASE_S
    slow_client_s: float = SLOW_CLIENT_GRACE_S
    messages_per_s: float = MESSAGE_RATE_PER_S
    message_burst: int = MESSAGE_BURST
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    key_recheck_s: float = DEFAULT_KEY_RECHECK_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WsSettings:
        exchanges = [e.strip().lower() for e in environ.get("PERSEUS_EXCHANGES", "").split(",") if e.strip()]
        return cls(
            # Short channel names mean the core's default exchange: the first of PERSEUS_EXCHANGES.
            default_exchange=exchanges[0] if exchanges else DEFAULT_EXCHANGE,
            heartbeat_s=_seconds(environ, "PERSEUS_WS_HEARTBEAT_S", DEFAULT_HEARTBEAT_S),
            ping_timeout_s=_seconds(environ, "PERSEUS_WS_PING_TIMEOUT_S", DEFAULT_PING_TIMEOUT_S),
            lease_s=_seconds(environ, "PERSEUS_WS_LEASE_S", DEFAULT_LEASE_S),
            slow_client_s=_seconds(environ, "PERSEUS_WS_SLOW_CLIENT_S", SLOW_CLIENT_GRACE_S),
            messages_per_s=_seconds(environ, "PERSEUS_WS_MESSAGES_PER_S", MESSAGE_RATE_PER_S),
            message_burst=int(_seconds(environ, "PERSEUS_WS_MESSAGE_BURST", MESSAGE_BURST)),
            max_frame_bytes=int(_seconds(environ, "PERSEUS_WS_MAX_FRAME_BYTES", DEFAULT_MAX_FRAME_BYTES, 1 << 24)),
            key_recheck_s=_seconds(environ, "PERSEUS_WS_KEY_RECHECK_S", DEFAULT_KEY_RECHECK_S),
        )


def _seconds(environ: Mapping[str, str], name: str, default: float, maximum: float = MAX_SECONDS) -> float:
    raw = environ.get(name, "").strip() or str(default)
    try:
        value = float(raw)
    except ValueError:
        raise GatewaySettingsError(name, f"must be a number (got {raw!r})") from None
    if not math.isfinite(value) or not 0 < value <= maximum:
        raise GatewaySettingsError(name, f"must be more than 0 and at most {maximum:g} (got {raw!r})")
    return value
