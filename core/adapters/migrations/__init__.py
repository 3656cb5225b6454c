"""Versioned SQL migrations: ``perseus migrate`` and the in-process :func:`migrate`.

The schema lives in ``NNNN_name.sql`` files beside this module, applied in
version order. The runner:

* records each applied file in ``schema_migrations`` (version, name,
  checksum, applied_at), so running it again applies nothing;
* applies each file in its own transaction, together with its record, so a
  failing file leaves no trace and the next run retries it;
* holds a PostgreSQL advisory lock while it works, so two processes migrating
  at once (two ``perseus up`` on one database) apply each file exactly once:
  the second waits, then finds nothing to do;
* refuses to run when an applied file has changed since (checksum mismatch):
  a released migration is never edited, a new one is added instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import asyncpg

from core.adapters.postgres import connect
from core.settings import EnvReader

logger = logging.getLogger(__name__)

# Key of the session-level advisory lock held while migrating ("perseus" in ASCII).
MIGRATION_LOCK_ID = 0x7065727365757300
LOCK_WAIT_S = 60.0
LOCK_POLL_S = 0.1
_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The schema cannot be brought up to date; ``str()`` is one line saying why."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL with line endings normalised (a CRLF checkout is not a change)."""
        return hashlib.sha256(self.sql.replace("\r\n", "\n").encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


def load_migrations() -> list[Migration]:
    """The migrations shipped in this package, in version order."""
    found: dict[str, Migration] = {}
    for entry in resources.files(__package__).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_lower_case_name.sql")
        version = match["version"]
        if version in found:
            raise MigrationError(f"two migration files share version {version}")
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


async def migrate(
    dsn_or_conn: str | asyncpg.Connection | asyncpg.Pool,
    *,
    migrations: Sequence[Migration] | None = None,
) -> list[str]:
    """Apply every pending migration; returns the versions applied by this call (empty when up to date).

    Raises StartupError when a DSN is unreachable and MigrationError when the
    schema cannot be migrated (changed checksum, failing SQL, lock timeout).
    """
    pending = list(migrations) if migrations is not None else load_migrations()
    if isinstance(dsn_or_conn, str):
        conn = await connect(dsn_or_conn)
        try:
            return await _migrate_locked(conn, pending)
        finally:
            await conn.close()
    if isinstance(dsn_or_conn, asyncpg.Pool):
        async with dsn_or_conn.acquire() as conn:
            return await _migrate_locked(conn, pending)
    return await _migrate_locked(dsn_or_conn, pending)


async def _migrate_locked(conn: asyncpg.Connection, migrations: Sequence[Migration]) -> list[str]:
    try:
        await _acquire_lock(conn)
        try:
            return await _apply_pending(conn, migrations)
        finally:
            await _release_lock(conn)
    except (OSError, asyncpg.InterfaceError) as exc:
        raise MigrationError(f"lost the database connection while migrating ({_one_line(exc)})") from exc
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"cannot migrate: {_one_line(exc)}") from exc


async def _acquire_lock(conn: asyncpg.Connection) -> None:
    deadline = time.monotonic() + LOCK_WAIT_S
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_ID):
        if time.monotonic() > deadline:
            raise MigrationError(f"another process has been migrating this database for over {LOCK_WAIT_S:.0f} s")
        await asyncio.sleep(LOCK_POLL_S)


async def _release_lock(conn: asyncpg.Connection) -> None:
    """Best effort: a closed connection has released its session lock already."""
    if conn.is_closed():
        return
    try:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresError) as exc:
        logger.warning("could not release the migration lock", extra={"fields": {"error": _one_line(exc)}})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def _apply_pending(conn: asyncpg.Connection, migrations: Sequence[Migration]) -> list[str]:
    await conn.execute(CREATE_SCHEMA_MIGRATIONS)
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    applied = {row["version"]: row for row in rows}
    known = {migration.version for migration in migrations}
    for version in sorted(set(applied) - known):
        logger.warning(
            "database has a migration this code does not know (newer code ran here?)",
            extra={"fields": {"version": version, "name": applied[version]["name"]}},
        )
    for migration in migrations:
        row = applied.get(migration.version)
        if row is not None and row["checksum"] != migration.checksum:
            raise MigrationError(
                f"migration {migration.label} was changed after it was applied (checksum mismatch); "
                "add a new migration instead of editing an applied one"
            )
    newly_applied: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        started = time.perf_counter()
        try:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"migration {migration.label} failed: {_one_line(exc)}") from exc
        logger.info(
            "migration applied",
            extra={"fields": {"version": migration.label, "ms": round((time.perf_counter() - started) * 1000, 1)}},
        )
        newly_applied.append(migration.version)
    return newly_applied


async def is_current(pool: asyncpg.Pool) -> bool:
    """True when every known migration has been applied (the core refuses to start otherwise)."""
    try:
        applied = set(await pool.fetchval("SELECT array_agg(version) FROM schema_migrations") or [])
    except asyncpg.UndefinedTableError:
        return False
    return {m.version for m in load_migrations()} <= applied


def run_migrate(environ: Mapping[str, str]) -> int:
    """``perseus migrate``: one line per applied version, or "schema up to date"."""
    dsn = EnvReader(environ).url("PERSEUS_DATABASE_URL", ("postgres", "postgresql"))
    try:
        migrations = load_migrations()
        applied = asyncio.run(migrate(dsn, migrations=migrations))
    except MigrationError as exc:
        print(f"perseus migrate: {exc}", file=sys.stderr)
        return 1
    labels = {migration.version: migration.label for migration in migrations}
    for version in applied:
        print(f"applied {labels[version]}")
    if not applied:
        print("schema up to date")
    return 0
