"""The gateways' shared settings: the ``PERSEUS_*`` variables both read (declared in ``common/settings.py``),
read once into a frozen object.

The REST and WebSocket gateways share one settings class; ``process`` picks which listen address applies.
Every check runs before anything starts, and a
bad value raises :class:`GatewaySettingsError`, whose ``str()`` is one line that starts with the variable's
name, for example ``PERSEUS_REST_ADDR: must be host:port with a port from 1 to 65535 (got 'x')``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from common import settings as env
from common.settings import (
    DEFAULT_CORE_ADDR,
    DEFAULT_GRPC_KEEPALIVE_S,
    DEFAULT_KEY_GRACE_S,
    DEFAULT_REST_ADDR,
    DEFAULT_WS_ADDR,
    Invalid,
    SettingsError,
    Variable,
)

Process = Literal["rest", "ws"]

PROCESSES: tuple[Process, ...] = ("rest", "ws")
LISTEN_ADDRS: Mapping[Process, Variable[str]] = {"rest": env.REST_ADDR, "ws": env.WS_ADDR}
DEFAULT_LISTEN_ADDRS: Mapping[Process, str] = {"rest": DEFAULT_REST_ADDR, "ws": DEFAULT_WS_ADDR}
LISTEN_ADDR_VARIABLES: Mapping[Process, str] = {process: variable.name for process, variable in LISTEN_ADDRS.items()}
# One error type for every process; the gateways' older name stays for their callers.
GatewaySettingsError = SettingsError

__all__ = [
    "DEFAULT_CORE_ADDR",
    "DEFAULT_GRPC_KEEPALIVE_S",
    "DEFAULT_LISTEN_ADDRS",
    "LISTEN_ADDR_VARIABLES",
    "PROCESSES",
    "GatewaySettings",
    "GatewaySettingsError",
    "Process",
    "SettingsError",
    "split_host_port",
]


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    process: Process
    core_addr: str
    redis_url: str
    redis_prefix: str
    listen_host: str
    listen_port: int
    core_deadline_s: float
    grpc_keepalive_s: float
    cors_origins: tuple[str, ...]
    log_level: str
    log_format: str
    key_grace_s: float = DEFAULT_KEY_GRACE_S  # a confirmed key keeps working this long while the core cannot answer

    @property
    def listen_addr(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, process: Process) -> GatewaySettings:
        if process not in PROCESSES:
            raise ValueError(f"process must be one of {PROCESSES} (got {process!r})")
        core_addr = env.CORE_ADDR.read(environ)
        listen = LISTEN_ADDRS[process]
        listen_host, listen_port = split_host_port(listen.name, listen.read(environ))
        return cls(
            process=process,
            core_addr=core_addr,
            redis_url=env.REDIS_URL.read(environ),
            redis_prefix=env.REDIS_PREFIX.read(environ),
            listen_host=listen_host,
            listen_port=listen_port,
            core_deadline_s=env.CORE_DEADLINE_S.read(environ),
            grpc_keepalive_s=env.GRPC_KEEPALIVE_S.read(environ),
            cors_origins=env.CORS_ORIGINS.read(environ),
            log_level=env.LOG_LEVEL.read(environ),
            log_format=env.LOG_FORMAT.read(environ),
            key_grace_s=env.KEY_GRACE_S.read(environ),
        )


def split_host_port(name: str, value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8000`` for IPv6) into its parts, or an error naming ``name``."""
    try:
        return env.split_host_port(value)
    except Invalid as exc:
        raise SettingsError(name, str(exc)) from None
