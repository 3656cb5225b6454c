"""The core's settings: the ``PERSEUS_*`` variables it reads (declared in ``common/settings.py``), read once
into a frozen object.

Every check runs before anything starts, and a bad value raises :class:`SettingsError` naming the variable,
which the CLI prints as one line. The checks are mode-aware: ``pw-host`` reads no exchange settings.
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from common import settings as env
from common.settings import (
    DEFAULT_GRPC_KEEPALIVE_S,
    DEFAULT_METRICS_ADDR,
    DEFAULT_SYMBOLS,
    KNOWN_EXCHANGES,
    LOG_LEVELS,
    MIN_GRPC_KEEPALIVE_S,
    SettingsError,
    StartupError,
)
from core.domain.symbols import canonical_symbol

__all__ = [
    "DEFAULT_GRPC_KEEPALIVE_S",
    "DEFAULT_METRICS_ADDR",
    "DEFAULT_SYMBOLS",
    "KNOWN_EXCHANGES",
    "LOG_LEVELS",
    "MIN_GRPC_KEEPALIVE_S",
    "Mode",
    "Settings",
    "SettingsError",
    "StartupError",
    "VenueSettings",
    "database_url",
]


class Mode(enum.StrEnum):
    EXCHANGE = "exchange"
    PW_HOST = "pw-host"


@dataclass(frozen=True, slots=True)
class VenueSettings:
    """Per-exchange settings: ``PERSEUS_<EXCHANGE>_SYMBOLS`` and ``PERSEUS_<EXCHANGE>_URL`` (tests, proxies)."""

    symbols: tuple[str, ...]
    url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str], exchange: str) -> VenueSettings:
        variable = env.VENUE_SYMBOLS[exchange]
        try:  # the symbol rules are the domain's, the same as for every symbol read from outside
            symbols = tuple(dict.fromkeys(canonical_symbol(s) for s in variable.read(environ)))
        except ValueError as exc:
            if isinstance(exc, SettingsError):
                raise
            raise SettingsError(variable.name, str(exc)) from None
        if not symbols:
            raise SettingsError(variable.name, "names no symbol")
        url = env.VENUE_URLS[exchange].read(environ) if exchange in env.VENUE_URLS else ""
        return cls(symbols, url)


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
    tick_retention_days: int = 0
    database_read_url: str = ""
    database_read_max_lag_s: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        mode = Mode(env.MODE.read(environ))
        exchanges = env.EXCHANGES.read(environ) if mode is Mode.EXCHANGE else ()
        return cls(
            mode=mode,
            redis_url=env.REDIS_URL.read(environ),
            database_url=env.DATABASE_URL.read(environ),
            core_addr=env.core_listen_addr(environ),
            redis_prefix=env.REDIS_PREFIX.read(environ),
            exchanges=exchanges,
            metrics_addr=env.CORE_METRICS_ADDR.read(environ),
            # unset: the first free port from 9464 up (core.metrics_server); set: exactly that address or a failure
            metrics_addr_explicit=env.CORE_METRICS_ADDR.name in environ,
            log_level=env.LOG_LEVEL.read(environ),
            log_format=env.LOG_FORMAT.read(environ),
            shutdown_grace_s=env.SHUTDOWN_GRACE_S.read(environ),
            max_call_s=env.CORE_MAX_CALL_S.read(environ),
            instance_id=env.INSTANCE_ID.read(environ) or f"{socket.gethostname()}:{os.getpid()}",
            venues={name: VenueSettings.from_env(environ, name) for name in exchanges},
            sim_seed=env.SIM_SEED.read(environ),
            sim_trades_per_second=env.SIM_TRADES_PER_S.read(environ),
            sim_backfill_minutes=env.SIM_BACKFILL_MINUTES.read(environ),
            writer_lease_ms=env.WRITER_LEASE_MS.read(environ),
            grpc_keepalive_s=env.GRPC_KEEPALIVE_S.read(environ),
            tick_retention_days=env.TICK_RETENTION_DAYS.read(environ),
            database_read_url=env.DATABASE_READ_URL.read(environ),
            database_read_max_lag_s=env.DATABASE_READ_MAX_LAG_S.read(environ),
        )


def database_url(environ: Mapping[str, str]) -> str:
    """``PERSEUS_DATABASE_URL`` alone (``perseus migrate`` and ``perseus keys``)."""
    return env.DATABASE_URL.read(environ)
