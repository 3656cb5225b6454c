"""Upkeep of the daily partitions of ``price_feeds``: create the days ahead, adopt stray ticks, drop expired days.

Migration 0005 made ``price_feeds`` a table partitioned by range of ``ts``, one partition per UTC day
(``price_feeds_pYYYYMMDD``) and a DEFAULT partition for a tick whose day has none. One run of
:meth:`TickPartitions.maintain`:

1. creates the partitions of yesterday, today and the next :data:`AHEAD_DAYS` days that are missing
   (yesterday: a first start shortly after midnight backfills hours of the day before, which would
   otherwise all land in DEFAULT and be moved an hour later);
2. *adopts* the ticks in the DEFAULT partition (a clock jump, an old backfill): each of their days
   gets its own partition and the rows move into it, so DEFAULT stays small (PostgreSQL scans it
   whenever a partition is added);
3. with a retention of N days, detaches and drops each day partition older than today - N (a tick
   is kept at least N and at most N+1 days), and deletes the expired rows of DEFAULT. "Today" for
   expiry is the earlier of the core's and PostgreSQL's clocks: one clock jumping ahead expires nothing.

No long lock on the live table. Adding or detaching a partition briefly takes an ACCESS EXCLUSIVE
lock on ``price_feeds`` (metadata only, milliseconds), under ``lock_timeout``: a step that would
have to queue behind a long read gives up (and would otherwise block every insert queued behind it)
and the run ends there, to be retried a minute later. ``DETACH PARTITION ... CONCURRENTLY`` would need no such lock, but
PostgreSQL refuses it on a table with a DEFAULT partition, and the DEFAULT partition is what keeps
a tick with no partition from being lost; days are created a week ahead, so a skipped run costs
nothing. A detached partition is dropped afterwards, when no query can reach it through the parent.

Only one core runs it at a time: the run holds a PostgreSQL advisory lock, and a core that finds
it taken skips its turn. Candles are untouched: they are kept without limit.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import asyncpg
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from core.adapters.postgres import UNAVAILABLE_ERRORS, Connection

logger = logging.getLogger(__name__)

TABLE = "price_feeds"
DEFAULT_PARTITION = "price_feeds_default"
AHEAD_DAYS = 7  # today and a week ahead: a core that cannot run maintenance for days loses nothing
ADOPT_DAYS_PER_RUN = 31  # bounded work per run; the rest waits for the next one
INTERVAL_S = 3600.0
RETRY_S = 60.0
# Ingested ticks wait in candle_inbox for their exchange's writer, which takes them within a second; those of a
# source that no core leads would wait for ever. Older than this they would be late for every candle anyway.
INBOX_KEEP = timedelta(days=2)
MAINTAIN_TIMEOUT_S = 600.0  # adopting many stray ticks takes a while; a stalled server takes for ever
LOCK_TIMEOUT_MS = 1000
# Key of the advisory lock held by the one core running maintenance ("perseus" in ASCII, then 1).
MAINTENANCE_LOCK_ID = 0x7065727365757301
_PARTITION_NAME = re.compile(r"price_feeds_p(\d{8})")
_ONE_DAY = timedelta(days=1)


def partition_name(day: date) -> str:
    return f"price_feeds_p{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(slots=True)
class MaintenanceReport:
    """What one run did (``ran`` false: another core holds the maintenance lock)."""

    ran: bool = False
    created: list[str] = field(default_factory=list)
    adopted_ticks: int = 0
    dropped: list[str] = field(default_factory=list)
    purged_ticks: int = 0
    purged_inbox: int = 0  # ingested ticks no writer took (candle_inbox), older than INBOX_KEEP
    more_strays: bool = False  # DEFAULT may hold more days than one run adopts: run again soon
    deferred: list[str] = field(default_factory=list)  # the step that met a lock: it and the rest are retried


class _Deferred(Exception):
    """A step met a lock held longer than ``lock_timeout``: the rest of the run waits for the next one."""


class TickPartitions:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retention_days: int = 0,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        interval_s: float = INTERVAL_S,
    ) -> None:
        """``retention_days``: 0 keeps ticks forever."""
        self._pool = pool
        self._retention_days = retention_days
        self._clock_ms = clock_ms
        self._interval_s = interval_s
        self.dropped_total = 0

    async def run(self) -> None:
        """Maintain at once, then every ``interval_s``; a failed run is logged and tried again next time."""
        while True:
            try:
                async with asyncio.timeout(MAINTAIN_TIMEOUT_S):  # a stalled server must not hold the lock for ever
                    report = await self.maintain()
            except UNAVAILABLE_ERRORS as exc:
                logger.warning("tick partition maintenance failed; next try in %.0f s: %r", RETRY_S, exc)
            except asyncpg.PostgresError:  # unexpected (a table in the way?): loud, and tried again, not a crash loop
                logger.exception("tick partition maintenance failed; next try in %.0f s", RETRY_S)
            else:
                if (
                    report.created
                    or report.dropped
                    or report.adopted_ticks
                    or report.purged_ticks
                    or report.deferred
                    or (report.purged_inbox)
                ):
                    logger.info(
                        "tick partitions maintained",
                        extra={
                            "fields": {
                                "created": report.created,
                                "adopted_ticks": report.adopted_ticks,
                                "dropped": report.dropped,
                                "purged_ticks": report.purged_ticks,
                                "purged_inbox": report.purged_inbox,
                                "deferred": report.deferred,
                            }
                        },
                    )
                if not (report.deferred or report.more_strays):
                    await asyncio.sleep(self._interval_s)
                    continue
            # soon again, not in an hour: the long read or the outage in the way will likely have ended, or
            # the rest of the stray days wait
            await asyncio.sleep(min(RETRY_S, self._interval_s))

    async def maintain(self) -> MaintenanceReport:
        report = MaintenanceReport()
        today = datetime.fromtimestamp(self._clock_ms() / 1000, UTC).date()
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_ID):
                return report
            try:
                report.ran = True
                # Expiry deletes data, so it goes by the earlier of two clocks: a core whose clock jumped a
                # year ahead creates partitions it did not need, but drops nothing the database thinks recent.
                db_today = (await conn.fetchval("SELECT now()")).astimezone(UTC).date()
                expired_before = min(today, db_today) - timedelta(days=self._retention_days)
                await self._steps(conn, today, expired_before if self._retention_days else None, report)
            except _Deferred as deferred:
                report.deferred.append(str(deferred))
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_ID)
        self.dropped_total += len(report.dropped)
        return report

    async def _steps(
        self, conn: Connection, today: date, expired_before: date | None, report: MaintenanceReport
    ) -> None:
        purged = await conn.execute("DELETE FROM candle_inbox WHERE ts < now() - $1::interval", INBOX_KEEP)
        report.purged_inbox = int(purged.split()[-1])
        existing = await self._days(conn)
        for offset in range(-1, AHEAD_DAYS + 1):
            day = today + offset * _ONE_DAY
            if day not in existing:
                await self._create(conn, day, report)
        strays = await self._stray_days(conn, expired_before)
        report.more_strays = len(strays) == ADOPT_DAYS_PER_RUN
        for day in strays:
            if day not in existing:
                await self._create(conn, day, report)
        if expired_before is not None:
            for day in sorted(existing):
                if day < expired_before:
                    await self._drop(conn, day, report)
            purged = await conn.execute(f"DELETE FROM {DEFAULT_PARTITION} WHERE ts < $1", day_start(expired_before))
            report.purged_ticks = int(purged.split()[-1])

    async def _days(self, conn: Connection) -> set[date]:
        """The days that have a partition named by this module (partitions named otherwise are left alone)."""
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = $1::regclass",
            TABLE,
        )
        days = set()
        for row in rows:
            match = _PARTITION_NAME.fullmatch(row["relname"])
            if match:
                days.add(datetime.strptime(match[1], "%Y%m%d").date())
        return days

    async def _stray_days(self, conn: Connection, expired_before: date | None) -> list[date]:
        """Days of the ticks waiting in the DEFAULT partition, newest first (the ones reads want); not expired ones."""
        rows = await conn.fetch(
            f"SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date AS day FROM {DEFAULT_PARTITION} "
            "WHERE $1::timestamptz IS NULL OR ts >= $1 ORDER BY 1 DESC LIMIT $2",
            None if expired_before is None else day_start(expired_before),
            ADOPT_DAYS_PER_RUN,
        )
        return [row["day"] for row in rows]

    async def _create(self, conn: Connection, day: date, report: MaintenanceReport) -> None:
        """Add the partition of ``day``, moving that day's ticks out of DEFAULT, in one transaction.

        PostgreSQL refuses a new partition while DEFAULT holds rows of its range, so they leave DEFAULT
        (into a temporary table) first and come back through the parent, which routes them to the new
        partition; ids travel with them. The parent stays locked while they move: for the days ahead
        there is nothing to move (milliseconds); for adopted strays, as long as moving them takes.
        """
        name, start, end = partition_name(day), day_start(day), day_start(day + _ONE_DAY)
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
                # the lock CREATE ... PARTITION OF takes anyway, taken first: no tick can enter DEFAULT for the
                # day between the move and the creation, and locks come in the inserts' order (parent first)
                await conn.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
                await conn.execute(f"CREATE TEMP TABLE perseus_moving_ticks (LIKE {TABLE}) ON COMMIT DROP")
                await conn.execute(
                    f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE ts >= $1 AND ts < $2 RETURNING *) "
                    "INSERT INTO perseus_moving_ticks SELECT * FROM moved",
                    start,
                    end,
                )
                await conn.execute(
                    f"CREATE TABLE {name} PARTITION OF {TABLE} "
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                )
                moved = await conn.execute(f"INSERT INTO {TABLE} SELECT * FROM perseus_moving_ticks")
        except asyncpg.LockNotAvailableError:
            raise _Deferred(f"create {name}") from None
        report.created.append(name)
        report.adopted_ticks += int(moved.split()[-1])

    async def _drop(self, conn: Connection, day: date, report: MaintenanceReport) -> None:
        name = partition_name(day)
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
                await conn.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
        except asyncpg.LockNotAvailableError:
            raise _Deferred(f"detach {name}") from None
        await conn.execute(f"DROP TABLE {name}")  # detached: no query on price_feeds waits for this
        report.dropped.append(name)


class TickPartitionMetrics(Collector):
    """``perseus_ticks_unpartitioned_total`` and ``perseus_tick_partitions_dropped_total``, read at scrape."""

    def __init__(self, unplaced: Callable[[], int], partitions: TickPartitions) -> None:
        self._unplaced = unplaced
        self._partitions = partitions

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "perseus_ticks_unpartitioned",
            "Ticks stored in the DEFAULT partition of price_feeds because their day had no partition yet",
            value=self._unplaced(),
        )
        yield CounterMetricFamily(
            "perseus_tick_partitions_dropped",
            "Day partitions of price_feeds dropped by this core for being older than PERSEUS_TICK_RETENTION_DAYS",
            value=self._partitions.dropped_total,
        )
