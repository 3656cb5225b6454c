"""PostgreSQL connections: the pool the core uses, single connections for CLI commands, a health probe,
and what every store shares: the statement timeout, the errors that mean "the database is unavailable"
(each store turns them into :class:`~core.domain.errors.Unavailable`), epoch milliseconds as ``timestamptz``.

This is the one place where "cannot reach PostgreSQL" is translated into
:class:`~core.settings.StartupError`, whose one-line message names the
variable and the server (never the password).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TypeAlias
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from common.settings import scrub
from core.settings import StartupError

logger = logging.getLogger(__name__)

# A connection of one's own or one on loan from a pool (what ``pool.acquire()`` yields): asyncpg-stubs types
# them apart, and a store given either runs the same statements on it. A pool runs a single statement too
# (on a connection of its own), but has no ``transaction()``. Strings: asyncpg's classes are not generic at
# run time.
Connection: TypeAlias = "asyncpg.Connection | PoolConnectionProxy"
Executor: TypeAlias = "Connection | asyncpg.Pool"

DATABASE_URL_VARIABLE = "PERSEUS_DATABASE_URL"
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_POOL_MIN_SIZE = 1
DEFAULT_POOL_MAX_SIZE = 10
# The application_name of the core's pool for heavy reads (price ranges, consensus, candle and alert history),
# kept apart from the pool ingestion writes through (issue 16; PERSEUS_DATABASE_HEAVY_POOL_SIZE).
HEAVY_POOL = "perseus-core-heavy-reads"
MS_PER_S = 1000.0
STATEMENT_TIMEOUT_S = 5.0  # every statement of a store; rebuilding candles in progress has its own, longer one

# What asyncpg raises when a server is unreachable, refuses us, or the database is missing.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

# What a lost or unusable database looks like to asyncpg once connected; the caller may retry.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(microsecond=(ms % 1000) * 1000)


def describe_dsn(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages: no user, no password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "(unparsable URL)"
    database = parts.path.lstrip("/") or "(default database)"
    return f"{host}:{port}/{database}"


def unreachable(dsn: str, exc: BaseException) -> StartupError:
    """The StartupError for a failed connection, on one line, without the URL's password (asyncpg's own
    texts do not quote it today; a driver's next version might)."""
    reason = scrub(" ".join(str(exc).split()), dsn) or type(exc).__name__
    return StartupError(f"{DATABASE_URL_VARIABLE}: cannot reach PostgreSQL at {describe_dsn(dsn)} ({reason})")


async def connect(
    dsn: str,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT_S,  # noqa: ASYNC109 (asyncpg's connect timeout, not a deadline)
) -> asyncpg.Connection:
    """One connection (for CLI commands and migrations); StartupError when unreachable."""
    try:
        return await asyncio.wait_for(asyncpg.connect(dsn, timeout=timeout), timeout + 1)
    except CONNECT_ERRORS as exc:
        raise unreachable(dsn, exc) from exc


async def create_pool(
    dsn: str,
    *,
    min_size: int = DEFAULT_POOL_MIN_SIZE,
    max_size: int = DEFAULT_POOL_MAX_SIZE,
    timeout: float = DEFAULT_CONNECT_TIMEOUT_S,  # noqa: ASYNC109 (per connection attempt, as in asyncpg)
    application_name: str | None = None,
) -> asyncpg.Pool:
    """A connection pool that has been proven to work; StartupError (one line) when unreachable.

    ``timeout`` bounds each connection attempt. The pool is checked with
    ``SELECT 1`` even when ``min_size`` is 0, so a bad URL fails at startup.
    ``application_name``: what ``pg_stat_activity`` shows for its connections (:data:`HEAVY_POOL`).
    """
    server_settings = {"application_name": application_name} if application_name else None
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, timeout=timeout, server_settings=server_settings
            ),
            timeout * max(min_size, 1) + 1,
        )
    except CONNECT_ERRORS as exc:
        raise unreachable(dsn, exc) from exc
    try:
        latency_ms = await asyncio.wait_for(check(pool), timeout)
    except CONNECT_ERRORS as exc:
        await pool.close()
        raise unreachable(dsn, exc) from exc
    logger.info("postgres pool open", extra={"fields": {"server": describe_dsn(dsn), "latency_ms": latency_ms}})
    return pool


async def check(pool: asyncpg.Pool) -> float:
    """Round-trip latency of ``SELECT 1`` in milliseconds; raises what asyncpg raises when down."""
    started = time.perf_counter()
    await pool.fetchval("SELECT 1")
    return (time.perf_counter() - started) * MS_PER_S


async def shared_secret(pool: asyncpg.Pool, name: str) -> bytes:
    """A secret every core instance shares (made by migration 0003); StartupError when it is missing."""
    value = await pool.fetchval("SELECT value FROM shared_secrets WHERE name = $1", name)
    if value is None:
        raise StartupError(f"PERSEUS_DATABASE_URL: the database has no {name!r} secret; run `perseus migrate`")
    return bytes(value)
