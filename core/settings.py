"""Core settings, read once from ``PERSEUS_*`` variables into a frozen object.

Every check runs before anything starts, and a bad value raises
:class:`SettingsError` naming the variable, which the CLI prints as one line.
The checks are mode-aware: ``pw-host`` needs no exchange settings.
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.domain.symbols import canonical_symbol

KNOWN_EXCHANGES = ("sim", "coinbase", "binance", "kraken")
DEFAULT_METRICS_ADDR = "127.0.0.1:9464"
# The gRPC keepalive of every Perseus channel: clients ping this often, the core's server accepts pings
# from half of it (core.rpc.server); the gateways read the same variable (gateways.common.settings).
DEFAULT_GRPC_KEEPALIVE_S = 30.0
MIN_GRPC_KEEPALIVE_S = 0.1
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class Mode(enum.StrEnum):
    EXCHANGE = "exchange"
    PW_HOST = "pw-host"


class SettingsError(ValueError):
    """A configuration value is missing or wrong; ``str()`` is one line."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True, slots=True)
class VenueSettings:
    """Per-exchange settings: ``PERSEUS_<EXCHANGE>_SYMBOLS`` and ``PERSEUS_<EXCHANGE>_URL`` (tests, proxies)."""

    symbols: tuple[str, ...]
    url: str


DEFAULT_SYMBOLS = {
    "sim": "BTC-USD,ETH-USD,SOL-USD,ADA-USD,DOGE-USD",
    "coinbase": "BTC-USD,ETH-USD",
    "binance": "BTC-USDT,ETH-USDT",
    "kraken": "BTC-USD,ETH-USD",
}


class StartupError(RuntimeError):
    """A dependency or resource is unusable at startup (unreachable server, port in use).

    ``str()`` is one line; the CLI prints it and exits non-zero.
    """


@dataclass(frozen=True, slots=True)
class Settings:
    mode: Mode
    redis_url: str
    database_url: str
    core_addr: str
    redis_prefix: str
    exchanges: tuple[str, ...]
    metrics_addr: str
    metrics_addr_explicit: bool
    log_level: str
    log_format: str
    shutdown_grace_s: float
    max_call_s: float
    instance_id: str
    venues: Mapping[str, VenueSettings]
    sim_seed: int
    sim_trades_per_second: float
    sim_backfill_minutes: int
    writer_lease_ms: int
    grpc_keepalive_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = EnvReader(environ)
        mode = env.choice("PERSEUS_MODE", [m.value for m in Mode], default=Mode.EXCHANGE.value)
        exchanges: tuple[str, ...] = ()
        if mode == Mode.EXCHANGE:
            exchanges = env.names("PERSEUS_EXCHANGES", KNOWN_EXCHANGES, default="sim")
        return cls(
            mode=Mode(mode),
            redis_url=env.url("PERSEUS_REDIS_URL", ("redis", "rediss", "unix")),
            database_url=env.url("PERSEUS_DATABASE_URL", ("postgres", "postgresql")),
            core_addr=env.addr("PERSEUS_CORE_ADDR", default="127.0.0.1:50051"),
            redis_prefix=env.prefix("PERSEUS_REDIS_PREFIX", default="perseus:"),
            exchanges=exchanges,
            metrics_addr=env.addr("PERSEUS_CORE_METRICS_ADDR", default=DEFAULT_METRICS_ADDR, optional=True),
            # unset: the first free port from 9464 up (core.metrics_server); set: exactly that address or a failure
            metrics_addr_explicit="PERSEUS_CORE_METRICS_ADDR" in environ,
            log_level=env.choice("PERSEUS_LOG_LEVEL", LOG_LEVELS, default="INFO", upper=True),
            log_format=env.choice("PERSEUS_LOG_FORMAT", ("json", "text"), default="json"),
            shutdown_grace_s=env.seconds("PERSEUS_SHUTDOWN_GRACE_S", default=5.0),
            max_call_s=env.seconds("PERSEUS_CORE_MAX_CALL_S", default=10.0),
            instance_id=environ.get("PERSEUS_INSTANCE_ID", "").strip() or f"{socket.gethostname()}:{os.getpid()}",
            venues={name: env.venue(name) for name in exchanges},
            sim_seed=env.integer("PERSEUS_SIM_SEED", default=7, low=0, high=2**63),
            sim_trades_per_second=env.number("PERSEUS_SIM_TRADES_PER_S", default=10.0, low=0.0, high=100_000.0),
            sim_backfill_minutes=env.integer("PERSEUS_SIM_BACKFILL_MINUTES", default=0, low=0, high=7 * 24 * 60),
            writer_lease_ms=env.integer("PERSEUS_WRITER_LEASE_MS", default=5_000, low=1_000, high=60_000),
            grpc_keepalive_s=env.number(
                "PERSEUS_GRPC_KEEPALIVE_S", default=DEFAULT_GRPC_KEEPALIVE_S, low=MIN_GRPC_KEEPALIVE_S, high=3600.0
            ),
        )


class EnvReader:
    """Typed reads of one environment mapping, each failing with the variable's name."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _get(self, name: str, default: str | None) -> str:
        value = self._environ.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise SettingsError(name, "is required and not set")
        return default

    def choice(self, name: str, allowed: tuple[str, ...] | list[str], *, default: str, upper: bool = False) -> str:
        value = self._get(name, default)
        value = value.upper() if upper else value.lower()
        if value not in allowed:
            raise SettingsError(name, f"must be one of {', '.join(allowed)} (got {value!r})")
        return value

    def names(self, name: str, allowed: tuple[str, ...], *, default: str) -> tuple[str, ...]:
        items = [item.strip().lower() for item in self._get(name, default).split(",") if item.strip()]
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise SettingsError(
                name, f"must be a comma-separated list of {', '.join(allowed)} (got {unknown or 'nothing'})"
            )
        return tuple(dict.fromkeys(items))

    def url(self, name: str, schemes: tuple[str, ...]) -> str:
        value = self._get(name, None)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises on a malformed port)
        except ValueError as exc:
            raise SettingsError(name, f"is not a valid URL ({exc})") from None
        if parts.scheme not in schemes:
            raise SettingsError(name, f"must be a URL with scheme {' or '.join(schemes)} (got {value!r})")
        if parts.scheme != "unix" and not parts.hostname and "host=" not in parts.query:
            raise SettingsError(name, f"has no host (got {value!r})")
        return value

    def addr(self, name: str, *, default: str, optional: bool = False) -> str:
        value = self._environ.get(name)
        if value is None:
            value = default
        value = value.strip()
        if not value and optional:
            return ""
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise SettingsError(name, f"must be host:port (got {value!r})")
        return value

    def prefix(self, name: str, *, default: str) -> str:
        value = self._environ.get(name, default)
        if any(ch in value for ch in "{}* \t\n"):
            raise SettingsError(name, f"must not contain braces, '*' or whitespace (got {value!r})")
        return value

    def venue(self, exchange: str) -> VenueSettings:
        prefix = f"PERSEUS_{exchange.upper()}"
        raw = self._get(f"{prefix}_SYMBOLS", DEFAULT_SYMBOLS[exchange])
        try:
            symbols = tuple(dict.fromkeys(canonical_symbol(s) for s in raw.split(",") if s.strip()))
        except ValueError as exc:
            raise SettingsError(f"{prefix}_SYMBOLS", str(exc)) from None
        if not symbols:
            raise SettingsError(f"{prefix}_SYMBOLS", "names no symbol")
        url = self._environ.get(f"{prefix}_URL", "").strip()
        if url and urlsplit(url).scheme not in ("ws", "wss"):
            raise SettingsError(f"{prefix}_URL", f"must be a ws:// or wss:// URL (got {url!r})")
        return VenueSettings(symbols, url)

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        raw = self._get(name, str(default))
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise SettingsError(name, f"must be an integer from {low} to {high} (got {raw!r})")
        return int(raw)

    def number(self, name: str, *, default: float, low: float, high: float) -> float:
        raw = self._get(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(name, f"must be a number (got {raw!r})") from None
        if not low <= value <= high:
            raise SettingsError(name, f"must be between {low:g} and {high:g} (got {raw!r})")
        return value

    def seconds(self, name: str, *, default: float) -> float:
        return self.number(name, default=default, low=0.0, high=3600.0)
