"""The WebSocket gateway's own settings (beyond the shared ones), read once from ``PERSEUS_*``.

The variables are declared in ``common/settings.py`` (``PERSEUS_WS_*``, and ``PERSEUS_EXCHANGES`` for the
default exchange of short channel names). A bad value raises :class:`SettingsError` naming the variable,
like the shared settings, so ``perseus ws`` stops with one line. The dataclass defaults are the declared
defaults (a test holds them equal), for apps built without an environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common import settings as env
from gateways.ws.limits import MESSAGE_BURST, MESSAGE_RATE_PER_S, SLOW_CLIENT_GRACE_S

DEFAULT_EXCHANGE = "sim"
DEFAULT_HEARTBEAT_S = 30.0
DEFAULT_PING_TIMEOUT_S = 20.0
DEFAULT_LEASE_S = 30.0
DEFAULT_MAX_FRAME_BYTES = 16 * 1024
DEFAULT_KEY_RECHECK_S = 5.0
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_CONNECTIONS_PER_IP = 10
DEFAULT_CHANNELS_PER_KEY = 500
DEFAULT_RESUMES_PER_KEY = 2
DEFAULT_TRUSTED_PROXIES = 0
DEFAULT_REPLAYS_PER_KEY = 2
DEFAULT_REPLAY_MAX_HOURS = 24


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
    # edge limits (issue 16); 0 means no cap, except resumes_per_key
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_ip: int = DEFAULT_MAX_CONNECTIONS_PER_IP
    channels_per_key: int = DEFAULT_CHANNELS_PER_KEY
    resumes_per_key: int = DEFAULT_RESUMES_PER_KEY
    trusted_proxies: int = DEFAULT_TRUSTED_PROXIES
    # history replays (issue 21)
    replays_per_key: int = DEFAULT_REPLAYS_PER_KEY
    replay_max_hours: int = DEFAULT_REPLAY_MAX_HOURS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WsSettings:
        return cls(
            # Short channel names mean the core's default exchange: the first of PERSEUS_EXCHANGES.
            default_exchange=env.EXCHANGES.read(environ)[0],
            heartbeat_s=env.WS_HEARTBEAT_S.read(environ),
            ping_timeout_s=env.WS_PING_TIMEOUT_S.read(environ),
            lease_s=env.WS_LEASE_S.read(environ),
            slow_client_s=env.WS_SLOW_CLIENT_S.read(environ),
            messages_per_s=env.WS_MESSAGES_PER_S.read(environ),
            message_burst=env.WS_MESSAGE_BURST.read(environ),
            max_frame_bytes=env.WS_MAX_FRAME_BYTES.read(environ),
            key_recheck_s=env.WS_KEY_RECHECK_S.read(environ),
            max_connections=env.WS_MAX_CONNECTIONS.read(environ),
            max_connections_per_ip=env.WS_MAX_CONNECTIONS_PER_IP.read(environ),
            channels_per_key=env.WS_CHANNELS_PER_KEY.read(environ),
            resumes_per_key=env.WS_RESUMES_PER_KEY.read(environ),
            trusted_proxies=env.TRUSTED_PROXIES.read(environ),
            replays_per_key=env.WS_REPLAYS_PER_KEY.read(environ),
            replay_max_hours=env.WS_REPLAY_MAX_HOURS.read(environ),
        )
