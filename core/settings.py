"""The core's settings: the ``PERSEUS_*`` variables it reads (declared in ``common/settings.py``), read once
into a frozen object.

Every check runs before anything starts, and a bad value raises :class:`SettingsError` naming the variable,
which the CLI prints as one line. The checks are mode-aware: ``pw-host`` reads no exchange settings.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

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
    "CoreCredentials",
    "Mode",
    "Settings",
    "SettingsError",
    "StartupError",
    "VenueSettings",
    "database_url",
    "for_worker",
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


LOOPBACK_NAMES = ("localhost",)


def is_loopback(addr: str) -> bool:
    """Whether the core's listen address ``host:port`` is reachable from this host only. A host name other
    than ``localhost`` counts as not loopback (it may resolve anywhere), and so do ``0.0.0.0`` and ``::``."""
    host = addr.rpartition(":")[0].removeprefix("[").removesuffix("]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class CoreCredentials:
    """Who may call the core (docs/design/core-credentials.md): the accepted service tokens, the tokens
    allowed on the restricted services (None: every accepted token), the server's TLS files (mutual TLS when
    ``tls_client_ca``), reflection, and the explicit leave to listen openly beyond loopback."""

    tokens: tuple[str, ...] = ()
    ingest_tokens: tuple[str, ...] | None = None
    key_service_tokens: tuple[str, ...] | None = None
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    reflection: bool = False
    insecure: bool = False

    @property
    def required(self) -> bool:
        """Whether a caller must prove who it is: a token or a client certificate is asked for."""
        return bool(self.tokens or self.tls_client_ca)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CoreCredentials:
        accepted = env.SERVICE_TOKEN.read(environ)
        restricted: dict[str, tuple[str, ...] | None] = {}
        for variable in (env.INGEST_TOKENS, env.KEY_SERVICE_TOKENS):
            listed = variable.read(environ)
            if listed and not accepted:
                raise SettingsError(variable.name, f"is set without {env.SERVICE_TOKEN.name}")
            if any(token not in accepted for token in listed):
                raise SettingsError(variable.name, f"lists a token that {env.SERVICE_TOKEN.name} does not list")
            restricted[variable.name] = listed or None
        cert, key, client_ca = (v.read(environ) for v in (env.CORE_TLS_CERT, env.CORE_TLS_KEY, env.CORE_TLS_CLIENT_CA))
        if bool(cert) != bool(key):
            missing, given = (env.CORE_TLS_KEY, env.CORE_TLS_CERT) if cert else (env.CORE_TLS_CERT, env.CORE_TLS_KEY)
            raise SettingsError(given.name, f"is set without {missing.name}")
        if client_ca and not cert:
            raise SettingsError(env.CORE_TLS_CLIENT_CA.name, f"is set without {env.CORE_TLS_CERT.name}")
        credentials = cls(
            tokens=accepted,
            ingest_tokens=restricted[env.INGEST_TOKENS.name],
            key_service_tokens=restricted[env.KEY_SERVICE_TOKENS.name],
            tls_cert=cert,
            tls_key=key,
            tls_client_ca=client_ca,
            reflection=env.CORE_REFLECTION.read(environ),
            insecure=env.CORE_INSECURE.read(environ),
        )
        addr = env.core_listen_addr(environ)
        if not credentials.required and not credentials.insecure and not is_loopback(addr):
            raise SettingsError(
                env.CORE_ADDR.name,
                f"{addr} is not a loopback address and no credential is set: set {env.SERVICE_TOKEN.name} "
                f"(or mutual TLS, {env.CORE_TLS_CLIENT_CA.name}), or {env.CORE_INSECURE.name}=1 to serve "
                "anyone who reaches the port",
            )
        return credentials


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Alert webhooks (``PERSEUS_WEBHOOK_*``; docs/design/webhooks.md)."""

    allow_hosts: tuple[str, ...] = ()
    max_endpoints: int = 10
    timeout_s: float = 10.0
    concurrency: int = 16
    retry_base_s: float = 10.0
    retry_max_s: float = 3600.0
    retry_for_s: float = 86_400.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WebhookSettings:
        return cls(
            allow_hosts=tuple(host.lower() for host in env.WEBHOOK_ALLOW_HOSTS.read(environ)),
            max_endpoints=env.WEBHOOK_MAX_ENDPOINTS.read(environ),
            timeout_s=env.WEBHOOK_TIMEOUT_S.read(environ),
            concurrency=env.WEBHOOK_CONCURRENCY.read(environ),
            retry_base_s=env.WEBHOOK_RETRY_BASE_S.read(environ),
            retry_max_s=env.WEBHOOK_RETRY_MAX_S.read(environ),
            retry_for_s=env.WEBHOOK_RETRY_FOR_S.read(environ),
        )


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
    credentials: CoreCredentials = field(default_factory=CoreCredentials)
    database_heavy_pool_size: int = 4  # heavy reads' own pool (PERSEUS_DATABASE_HEAVY_POOL_SIZE)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    workers: int = 1  # PERSEUS_CORE_WORKERS: processes sharing core_addr (SO_REUSEPORT when above 1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        mode = Mode(env.MODE.read(environ))
        if mode is Mode.PW_HOST:
            refuse_exchange_settings(environ)
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
            credentials=CoreCredentials.from_env(environ),
            database_heavy_pool_size=env.DATABASE_HEAVY_POOL_SIZE.read(environ),
            webhooks=WebhookSettings.from_env(environ),
            workers=env.CORE_WORKERS.read(environ),
        )


# What makes a core run venue adapters: in pw-host mode they are a mistake (seed 000: refuse to start rather
# than run headless while the operator expects a feed). The symbols and the simulated exchange's tuning are
# not among them: a settings file shared by every process may carry them, and alone they start nothing.
PW_HOST_REFUSED = (env.EXCHANGES, *env.VENUE_URLS.values())


def refuse_exchange_settings(environ: Mapping[str, str]) -> None:
    """Raise SettingsError naming the first exchange setting set in a pw-host core's environment."""
    for variable in PW_HOST_REFUSED:
        if variable.is_set(environ):
            raise SettingsError(
                variable.name,
                "is an exchange setting, but PERSEUS_MODE=pw-host runs no exchange adapters: unset it for this "
                "core, or run it with PERSEUS_MODE=exchange",
            )


def database_url(environ: Mapping[str, str]) -> str:
    """``PERSEUS_DATABASE_URL`` alone (``perseus migrate`` and ``perseus keys``)."""
    return env.DATABASE_URL.read(environ)


def for_worker(settings: Settings, index: int, *, instance_id_set: bool) -> Settings:
    """Worker ``index``'s settings under ``PERSEUS_CORE_WORKERS``: an instance id of its own (a given
    ``PERSEUS_INSTANCE_ID`` gets ``:w<index>``; the default ``<hostname>:<pid>`` already differs), and an
    explicit metrics port moved up by ``index`` (unset: each worker finds a free one; empty: none)."""
    instance_id = f"{settings.instance_id}:w{index}" if instance_id_set else settings.instance_id
    metrics_addr = settings.metrics_addr
    if metrics_addr and settings.metrics_addr_explicit and index:
        host, _, port = metrics_addr.rpartition(":")
        metrics_addr = f"{host}:{int(port) + index}"
    return replace(settings, instance_id=instance_id, metrics_addr=metrics_addr)
