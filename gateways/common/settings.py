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

DEFAULT_BAD_KEYS_PER_MINUTE = int(env.BAD_KEYS_PER_MINUTE.default or 0)
DEFAULT_INTERNAL_REQUESTS_PER_MINUTE = int(env.INTERNAL_REQUESTS_PER_MINUTE.default or 0)
DEFAULT_RANGE_MAX_BUCKETS = int(env.RANGE_MAX_BUCKETS.default or 0)
DEFAULT_HEAVY_READS_PER_KEY = int(env.HEAVY_READS_PER_KEY.default or 0)
DEFAULT_CANDLE_CACHE_BYTES = int(env.CANDLE_CACHE_BYTES.default or 0)

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
class CoreTls:
    """The gateways' TLS to the core: the CA that signed its certificate, and a client certificate and key for a
    core that asks for one (mutual TLS)."""

    ca: str
    client_cert: str = ""
    client_key: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CoreTls | None:
        variables = (env.CORE_TLS_CA, env.CORE_TLS_CLIENT_CERT, env.CORE_TLS_CLIENT_KEY)
        ca, cert, key = (variable.read(environ) for variable in variables)
        if bool(cert) != bool(key):
            given, missing = variables[1:] if cert else variables[:0:-1]
            raise SettingsError(given.name, f"is set without {missing.name}")
        if cert and not ca:
            raise SettingsError(env.CORE_TLS_CLIENT_CERT.name, f"is set without {env.CORE_TLS_CA.name}")
        return cls(ca, cert, key) if ca else None


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
    # edge limits (issue 16); the REST gateway reads all of them, the WS gateway bad_keys_per_minute
    bad_keys_per_minute: int = DEFAULT_BAD_KEYS_PER_MINUTE
    internal_requests_per_minute: int = DEFAULT_INTERNAL_REQUESTS_PER_MINUTE
    range_max_buckets: int = DEFAULT_RANGE_MAX_BUCKETS
    heavy_reads_per_key: int = DEFAULT_HEAVY_READS_PER_KEY
    candle_cache_bytes: int = DEFAULT_CANDLE_CACHE_BYTES
    # bulk export (issue 21): daily row budgets by tier and the longest ranges
    export_rows_per_day_free: int = int(env.EXPORT_ROWS_PER_DAY_FREE.default or 0)
    export_rows_per_day_pro: int = int(env.EXPORT_ROWS_PER_DAY_PRO.default or 0)
    export_max_candles: int = int(env.EXPORT_MAX_CANDLES.default or 0)
    export_max_tick_hours: int = int(env.EXPORT_MAX_TICK_HOURS.default or 0)
    trusted_proxies: int = 0  # PERSEUS_TRUSTED_PROXIES (the REST gateway's copy; the WS gateway reads its own)
    # the service credential sent to the core: the first PERSEUS_SERVICE_TOKEN, and the TLS files (CA, client pair)
    service_token: str = ""
    core_tls: CoreTls | None = None
    # PERSEUS_WS_ADDR as the REST gateway reads it: the server its copy of the AsyncAPI document names
    stream_addr: str = DEFAULT_WS_ADDR
    # PERSEUS_REST_WORKERS / PERSEUS_WS_WORKERS: processes sharing the listen port (perseus_cli.workers)
    workers: int = 1
    core_connections: int = 1  # PERSEUS_CORE_CONNECTIONS: connections to each core, reads rotating over them

    @property
    def listen_addr(self) -> str:
        return join_host_port(self.listen_host, self.listen_port)

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
            service_token=next(iter(env.SERVICE_TOKEN.read(environ)), ""),
            core_tls=CoreTls.from_env(environ),
            bad_keys_per_minute=env.BAD_KEYS_PER_MINUTE.read(environ),
            **(_rest_limits(environ) if process == "rest" else {}),
            stream_addr=join_host_port(*split_host_port(env.WS_ADDR.name, env.WS_ADDR.read(environ))),
            workers=(env.REST_WORKERS if process == "rest" else env.WS_WORKERS).read(environ),
            core_connections=env.CORE_CONNECTIONS.read(environ),
        )


def _rest_limits(environ: Mapping[str, str]) -> dict[str, int]:
    return {
        "internal_requests_per_minute": env.INTERNAL_REQUESTS_PER_MINUTE.read(environ),
        "range_max_buckets": env.RANGE_MAX_BUCKETS.read(environ),
        "heavy_reads_per_key": env.HEAVY_READS_PER_KEY.read(environ),
        "candle_cache_bytes": env.CANDLE_CACHE_BYTES.read(environ),
        "trusted_proxies": env.TRUSTED_PROXIES.read(environ),
        "export_rows_per_day_free": env.EXPORT_ROWS_PER_DAY_FREE.read(environ),
        "export_rows_per_day_pro": env.EXPORT_ROWS_PER_DAY_PRO.read(environ),
        "export_max_candles": env.EXPORT_MAX_CANDLES.read(environ),
        "export_max_tick_hours": env.EXPORT_MAX_TICK_HOURS.read(environ),
    }


def join_host_port(host: str, port: int) -> str:
    """``host:port``, the host in brackets when it is an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(name: str, value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8000`` for IPv6) into its parts, or an error naming ``name``."""
    try:
        return env.split_host_port(value)
    except Invalid as exc:
        raise SettingsError(name, str(exc)) from None
