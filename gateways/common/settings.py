"""Gateway settings, read once from ``PERSEUS_*`` variables into a frozen object.

The REST and WebSocket gateways share one settings class; ``process`` picks
which listen address applies. Every check runs before anything starts, and a
bad value raises :class:`GatewaySettingsError`, whose ``str()`` is one line
that starts with the variable's name, for example
``PERSEUS_REST_ADDR: must be host:port (got 'x')``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Process = Literal["rest", "ws"]

PROCESSES: tuple[Process, ...] = ("rest", "ws")
DEFAULT_CORE_ADDR = "127.0.0.1:50051"
DEFAULT_LISTEN_ADDRS: Mapping[Process, str] = {"rest": "127.0.0.1:8000", "ws": "127.0.0.1:8001"}
LISTEN_ADDR_VARIABLES: Mapping[Process, str] = {"rest": "PERSEUS_REST_ADDR", "ws": "PERSEUS_WS_ADDR"}
DEFAULT_REDIS_PREFIX = "perseus:"
DEFAULT_CORE_DEADLINE_S = 2.0
MAX_CORE_DEADLINE_S = 300.0
# The gRPC keepalive to the core: the same variable and default as the core's (core.settings), whose server
# permits pings from half this interval on.
DEFAULT_GRPC_KEEPALIVE_S = 30.0
MIN_GRPC_KEEPALIVE_S = 0.1
MAX_GRPC_KEEPALIVE_S = 3600.0
DEFAULT_CORS_ORIGINS = "*"
DEFAULT_KEY_GRACE_S = 60.0
MAX_KEY_GRACE_S = 3600.0
REDIS_SCHEMES = ("redis", "rediss", "unix")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")
MAX_PORT = 65535


class GatewaySettingsError(ValueError):
    """A configuration value is missing or wrong; ``str()`` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


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
        core_addr = _addr(environ, "PERSEUS_CORE_ADDR", DEFAULT_CORE_ADDR)
        listen_variable = LISTEN_ADDR_VARIABLES[process]
        listen_host, listen_port = split_host_port(
            listen_variable, _addr(environ, listen_variable, DEFAULT_LISTEN_ADDRS[process])
        )
        return cls(
            process=process,
            core_addr=core_addr,
            redis_url=_redis_url(environ, "PERSEUS_REDIS_URL"),
            redis_prefix=_prefix(environ, "PERSEUS_REDIS_PREFIX"),
            listen_host=listen_host,
            listen_port=listen_port,
            core_deadline_s=_seconds(environ, "PERSEUS_CORE_DEADLINE_S", DEFAULT_CORE_DEADLINE_S),
            grpc_keepalive_s=_seconds(
                environ,
                "PERSEUS_GRPC_KEEPALIVE_S",
                DEFAULT_GRPC_KEEPALIVE_S,
                low=MIN_GRPC_KEEPALIVE_S,
                high=MAX_GRPC_KEEPALIVE_S,
            ),
            cors_origins=_origins(environ, "PERSEUS_CORS_ORIGINS"),
            log_level=_choice(environ, "PERSEUS_LOG_LEVEL", LOG_LEVELS, "INFO").upper(),
            log_format=_choice(environ, "PERSEUS_LOG_FORMAT", LOG_FORMATS, "json").lower(),
            key_grace_s=_grace(environ, "PERSEUS_KEY_GRACE_S", DEFAULT_KEY_GRACE_S),
        )


def _value(environ: Mapping[str, str], name: str, default: str | None) -> str:
    value = environ.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise GatewaySettingsError(name, "is required and not set")
    return default


def _addr(environ: Mapping[str, str], name: str, default: str) -> str:
    value = _value(environ, name, default)
    split_host_port(name, value)
    return value


def split_host_port(name: str, value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8000`` for IPv6) into its parts, or an error naming ``name``."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT or any(c.isspace() for c in value):
        raise GatewaySettingsError(name, f"must be host:port with a port from 1 to {MAX_PORT} (got {value!r})")
    return host, int(port)


def _redis_url(environ: Mapping[str, str], name: str) -> str:
    value = _value(environ, name, None)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise GatewaySettingsError(name, "is not a valid URL") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise GatewaySettingsError(name, f"must be a URL with scheme {' or '.join(REDIS_SCHEMES)}")
    if parts.scheme != "unix" and not parts.hostname:
        raise GatewaySettingsError(name, "has no host")
    return value


def _prefix(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, DEFAULT_REDIS_PREFIX)
    if any(ch in value for ch in "{}*") or any(ch.isspace() for ch in value):
        raise GatewaySettingsError(name, f"must not contain braces, '*' or whitespace (got {value!r})")
    return value


def _seconds(
    environ: Mapping[str, str], name: str, default: float, *, low: float = 0.0, high: float = MAX_CORE_DEADLINE_S
) -> float:
    raw = _value(environ, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise GatewaySettingsError(name, f"must be a number of seconds (got {raw!r})") from None
    if not math.isfinite(value) or not (low < value if low == 0 else low <= value) or value > high:
        least = "more than 0" if low == 0 else f"at least {low:g} s"
        raise GatewaySettingsError(name, f"must be {least} and at most {high:g} s (got {raw!r})")
    return value


def _grace(environ: Mapping[str, str], name: str, default: float) -> float:
    """Seconds from 0 (no grace) to :data:`MAX_KEY_GRACE_S`."""
    raw = _value(environ, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise GatewaySettingsError(name, f"must be a number of seconds (got {raw!r})") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_KEY_GRACE_S:
        raise GatewaySettingsError(name, f"must be from 0 to {MAX_KEY_GRACE_S:g} s (got {raw!r})")
    return value


def _origins(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = _value(environ, name, DEFAULT_CORS_ORIGINS)
    origins = tuple(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))
    if not origins:
        raise GatewaySettingsError(name, f"must be '*' or a comma-separated list of origins (got {raw!r})")
    if "*" in origins and len(origins) > 1:
        raise GatewaySettingsError(name, f"'*' cannot be combined with other origins (got {raw!r})")
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise GatewaySettingsError(name, f"origins must look like https://host[:port] (got {origin!r})")
    return origins


def _choice(environ: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = _value(environ, name, default)
    if value.lower() not in {a.lower() for a in allowed}:
        raise GatewaySettingsError(name, f"must be one of {', '.join(allowed)} (got {value!r})")
    return value
