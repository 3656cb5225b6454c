"""Versioned SQL migrations: ``perseus migrate [--status]`` and the in-process :func:`migrate`.

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
import enum
import hashlib
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

import asyncpg

from core.adapters.postgres import Connection, connect
from core.settings import database_url

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
    dsn_or_conn: str | Connection | asyncpg.Pool,
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
        async with dsn_or_conn.acquire() as pooled:
            return await _migrate_locked(pooled, pending)
    return await _migrate_locked(dsn_or_conn, pending)


async def _migrate_locked(conn: Connection, migrations: Sequence[Migration]) -> list[str]:
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


async def _acquire_lock(conn: Connection) -> None:
    deadline = time.monotonic() + LOCK_WAIT_S
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_ID):
        if time.monotonic() > deadline:
            raise MigrationError(f"another process has been migrating this database for over {LOCK_WAIT_S:.0f} s")
        await asyncio.sleep(LOCK_POLL_S)


async def _release_lock(conn: Connection) -> None:
    """Best effort: a closed connection has released its session lock already."""
    if conn.is_closed():
        return
    try:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresError) as exc:
        logger.warning("could not release the migration lock", extra={"fields": {"error": _one_line(exc)}})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def _apply_pending(conn: Connection, migrations: Sequence[Migration]) -> list[str]:
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


class MigrationState(enum.StrEnum):
    APPLIED = "applied"
    PENDING = "pending"
    CHANGED = "changed"  # applied, but the file differs from what was applied: `perseus migrate` refuses
    UNKNOWN = "unknown"  # applied by code newer than this one: harmless here, worth knowing


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """One row of ``perseus migrate --status``: a shipped or recorded migration and its state."""

    version: str
    name: str
    state: MigrationState
    applied_at: datetime | None

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


async def migration_status(
    conn: asyncpg.Connection, *, migrations: Sequence[Migration] | None = None
) -> list[MigrationStatus]:
    """Every shipped and every recorded migration with its state, in version order.

    Read-only, unlike :func:`migrate`: it creates no table and takes no lock,
    so it can be pointed at a production database (a database nobody migrated
    yet simply has every migration pending).
    """
    shipped = list(migrations) if migrations is not None else load_migrations()
    try:
        rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations")
    except asyncpg.UndefinedTableError:
        rows = []
    applied = {row["version"]: row for row in rows}
    found: list[MigrationStatus] = []
    for migration in shipped:
        row = applied.pop(migration.version, None)
        if row is None:
            found.append(MigrationStatus(migration.version, migration.name, MigrationState.PENDING, None))
            continue
        state = MigrationState.APPLIED if row["checksum"] == migration.checksum else MigrationState.CHANGED
        found.append(MigrationStatus(migration.version, migration.name, state, row["applied_at"]))
    found += [MigrationStatus(v, r["name"], MigrationState.UNKNOWN, r["applied_at"]) for v, r in applied.items()]
    return sorted(found, key=lambda status: status.version)


async def is_current(pool: asyncpg.Pool) -> bool:
    """True when every known migration has been applied (the core refuses to start otherwise)."""
    try:
        applied = set(await pool.fetchval("SELECT array_agg(version) FROM schema_migrations") or [])
    except asyncpg.UndefinedTableError:
        return False
    return {m.version for m in load_migrations()} <= applied


def run_migrate(environ: Mapping[str, str]) -> int:
    """``perseus migrate``: one line per applied version, or "schema up to date"."""
    dsn = database_url(environ)
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


# Exit status of ``perseus migrate --status`` when the schema is behind this code: distinct from an error (1)
# and a settings or connection problem (2), so a deploy script can tell "run migrate" from "look into it".
EXIT_PENDING = 3
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def format_status(rows: Sequence[MigrationStatus]) -> list[str]:
    """Lines of ``perseus migrate --status``: state, migration, when it was applied."""
    width = max((len(row.label) for row in rows), default=0)
    lines = []
    for row in rows:
        when = row.applied_at.astimezone(UTC).strftime(_TIME_FORMAT) if row.applied_at is not None else "-"
        lines.append(f"{row.state.value:<8} {row.label:<{width}}  {when}".rstrip())
    return lines


def status_verdict(rows: Sequence[MigrationStatus]) -> tuple[int, str]:
    """Exit status and the closing line of ``perseus migrate --status`` (the line says what to do next)."""
    changed = [row.label for row in rows if row.state is MigrationState.CHANGED]
    pending = [row.label for row in rows if row.state is MigrationState.PENDING]
    if changed:
        return 1, (
            f"migration {', '.join(changed)} changed after it was applied; "
            "restore the released file and add a new migration instead"
        )
    if pending:
        count = f"{len(pending)} migration{'s' if len(pending) > 1 else ''}"
        return EXIT_PENDING, f"{count} pending; apply with `perseus migrate`"
    return 0, "schema up to date"


async def _status(dsn: str) -> list[MigrationStatus]:
    conn = await connect(dsn)
    try:
        return await migration_status(conn)
    finally:
        await conn.close()


def run_migrate_status(environ: Mapping[str, str]) -> int:
    """``perseus migrate --status``: one line per migration, then a verdict; exit 0 current, 3 pending, 1 changed."""
    dsn = database_url(environ)
    try:
        rows = asyncio.run(_status(dsn))
    except MigrationError as exc:  # a misnamed file shipped with the code
        print(f"perseus migrate: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresError) as exc:
        print(f"perseus migrate: cannot read schema_migrations: {_one_line(exc)}", file=sys.stderr)
        return 1
    for line in format_status(rows):
        print(line)
    code, verdict = status_verdict(rows)
    print(verdict, file=sys.stdout if code in (0, EXIT_PENDING) else sys.stderr)
    return code
