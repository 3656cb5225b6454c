"""Ticks partitioned by day: the migration of a populated table, stray ticks, maintenance and retention.

Each test builds its own database (scratch, dropped at the end), so the partitions it makes and the
clock it pretends to have touch no other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from core.adapters.candle_store import _TICK_MINUTES, NOT_WAITING
from core.adapters.migrations import load_migrations, migrate
from core.adapters.price_queries_pg import _BUCKETS_ALL_SOURCES, PgPriceHistory
from core.adapters.tick_partitions import (
    ADOPT_DAYS_PER_RUN,
    AHEAD_DAYS,
    DEFAULT_PARTITION,
    MAINTENANCE_LOCK_ID,
    TickPartitionMetrics,
    TickPartitions,
    partition_name,
)
from core.adapters.tick_store import TickStore
from core.domain.prices import Tick
from core.domain.timeframes import Timeframe
from core.services.price_queries import RangeQuery
from tests.support.databases import scratch_database

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
TICKS = 1_000_000
BY_INDEX = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


@pytest.fixture
async def fresh_url(admin_database_url: str) -> AsyncIterator[str]:
    async with scratch_database(admin_database_url, f"perseus_ticks_{secrets.token_hex(4)}") as url:
        yield url


async def partitions(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'price_feeds'::regclass"
    )
    return {row["relname"] for row in rows}


def today(now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, UTC)


def plan_relations(plan: dict[str, object]) -> list[tuple[str, str]]:
    """(node type, relation) of every scan an EXPLAIN (ANALYZE, FORMAT JSON) plan ran (not those pruned)."""
    found = []
    if "Relation Name" in plan and plan.get("Actual Loops", 1):
        found.append((str(plan["Node Type"]), str(plan["Relation Name"])))
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        found += plan_relations(child)
    return found


async def explain(conn: asyncpg.Connection, query: str, *args: object) -> list[tuple[str, str]]:
    raw = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + query, *args)
    return plan_relations(json.loads(raw)[0]["Plan"])


@pytest.mark.xdist_group("tick-partitions-million")
@pytest.mark.timeout(120)
async def test_a_million_ticks_migrate_into_day_partitions_with_the_same_answers(fresh_url: str) -> None:
    before = [m for m in load_migrations() if m.version < "0005"]
    assert await migrate(fresh_url, migrations=before) == ["0001", "0002", "0003", "0004"]
    now_ms = time.time_ns() // 1_000_000
    conn = await asyncpg.connect(fresh_url)
    try:
        # ten symbols, two sources, a tick every 0.8 s for ~9 days back; every 5th pair of ticks shares a
        # timestamp (ties broken by id)
        await conn.execute(
            """
            INSERT INTO price_feeds (symbol, price, volume, source, ts, worker_id)
            SELECT 'S' || (i % 10) || '-USD', 100 + (i % 997) / 100.0, i % 7,
                   CASE WHEN i % 3 = 0 THEN 'coinbase' ELSE 'sim' END,
                   to_timestamp($1 / 1000.0) - ((i / 5) * 4) * interval '1 second', 'seed'
            FROM generate_series(1, $2) AS i
            """,
            now_ms,
            TICKS,
        )
        await conn.execute("ANALYZE price_feeds")
        start = (today(now_ms) - timedelta(days=3, hours=5)).replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
        # candle_inbox (0007) does not exist yet, and holds nothing here
        minutes_before = await conn.fetch(_TICK_MINUTES.replace(NOT_WAITING, "") + " LIMIT 90", "S3-USD", "sim", start)
        days_with_data = {
            r["d"] for r in await conn.fetch("SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date AS d FROM price_feeds")
        }
        max_id = await conn.fetchval("SELECT max(id) FROM price_feeds")
    finally:
        await conn.close()

    pool = await asyncpg.create_pool(fresh_url, min_size=1, max_size=2)
    try:
        history = PgPriceHistory(pool, sources=["coinbase", "sim"])
        query = RangeQuery(
            "S3-USD", int(start.timestamp() * 1000), int(end.timestamp() * 1000), Timeframe.M1, None, 100
        )
        buckets_before = await history.buckets(query)
        assert len(buckets_before) == 60
        symbols = [f"S{n}-USD" for n in range(10)]
        latest_before = await history.latest(symbols)
        window = (int(start.timestamp() * 1000), int(end.timestamp() * 1000))
        consensus_before = await history.latest_per_source(symbols, after_ms=window[0], until_ms=window[1])
        assert len(latest_before) == 10 and len(consensus_before) == 20

        assert await migrate(pool) == [m.version for m in load_migrations() if m.version >= "0005"]

        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM price_feeds") == TICKS
            assert await conn.fetchval(f"SELECT count(*) FROM {DEFAULT_PARTITION}") == 0
            assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'price_feeds'") == "p"
            names = await partitions(conn)
            assert {partition_name(d) for d in days_with_data} <= names
            assert DEFAULT_PARTITION in names
            first_day = today(now_ms).date()
            assert {partition_name(first_day + timedelta(days=n)) for n in range(AHEAD_DAYS + 1)} <= names
            # no tick changed partition or id; new ids continue after the old ones
            assert await conn.fetchval("SELECT max(id) FROM price_feeds") == max_id
            new_id = await conn.fetchval(
                "INSERT INTO price_feeds (symbol, price, source, ts) VALUES ('NEW-USD', 1, 'sim', now()) RETURNING id"
            )
            assert new_id > max_id
            await conn.execute("DELETE FROM price_feeds WHERE symbol = 'NEW-USD'")

            # the rebuild and the price range: same answers, by index, on the partitions of their range only
            assert await conn.fetch(_TICK_MINUTES + " LIMIT 90", "S3-USD", "sim", start) == minutes_before
            # (the empty partitions of the days ahead may be read whole: they have no page to read)
            scans = await explain(conn, _TICK_MINUTES, "S3-USD", "sim", today(now_ms) - timedelta(hours=2))
            with_data = [(node, rel) for node, rel in scans if rel in {partition_name(d) for d in days_with_data}]
            assert with_data and all(node in BY_INDEX for node, _ in with_data), scans
            assert {rel for _, rel in with_data} <= {
                partition_name(first_day),
                partition_name(first_day - timedelta(1)),
            }
        assert await history.buckets(query) == buckets_before
        assert await history.latest(symbols) == latest_before
        assert await history.latest_per_source(symbols, after_ms=window[0], until_ms=window[1]) == consensus_before
        async with pool.acquire() as conn:
            scans = await explain(conn, _BUCKETS_ALL_SOURCES, "S3-USD", start, end, timedelta(minutes=1), 100)
            assert scans and all(node in BY_INDEX for node, _ in scans), scans
            assert len({rel for _, rel in scans}) == 1, scans  # pruned to the one day of the range

        # a re-ingested batch of stored ticks stores nothing: the identity still holds across partitions
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT symbol, price, volume, source, ts FROM price_feeds WHERE symbol = 'S1-USD' "
                "ORDER BY ts DESC LIMIT 500"
            )
        ticks = [
            (i, Tick(r["symbol"], r["price"], r["volume"], r["source"], int(r["ts"].timestamp() * 1000)))
            for i, r in enumerate(rows)
        ]
        store = TickStore(pool)
        assert await store.insert(ticks, worker_id="again", batch_id="b") == set()
        assert await pool.fetchval("SELECT count(*) FROM price_feeds") == TICKS
        assert store.unplaced == 0
    finally:
        await pool.close()


async def test_ingested_ticks_no_writer_took_are_purged_after_two_days(fresh_url: str) -> None:
    """candle_inbox rows of a source no core leads would wait for ever: the maintenance deletes those older than
    two days (late for every candle by then); recent ones stay for the writer, and the ticks stay stored."""
    await migrate(fresh_url)
    pool = await asyncpg.create_pool(fresh_url, min_size=1, max_size=3)
    try:
        store = TickStore(pool)
        now_ms = time.time_ns() // 1_000_000
        ticks = [
            (0, Tick("INBOX-USD", Decimal("1"), Decimal("1"), "coinbase", now_ms - 3 * DAY_MS)),
            (1, Tick("INBOX-USD", Decimal("2"), Decimal("1"), "coinbase", now_ms - DAY_MS)),
            (2, Tick("INBOX-USD", Decimal("3"), Decimal("1"), "coinbase", now_ms)),
        ]
        stored = await store.insert(ticks, worker_id="w", batch_id="b", to_candles=frozenset({"coinbase"}))
        assert stored == {0, 1, 2}
        assert await pool.fetchval("SELECT count(*) FROM candle_inbox") == 3
        report = await TickPartitions(pool, clock_ms=lambda: now_ms).maintain()
        assert report.ran and report.purged_inbox == 1
        assert [r["price"] for r in await pool.fetch("SELECT price FROM candle_inbox ORDER BY ts")] == [2, 3]
        assert await pool.fetchval("SELECT count(*) FROM price_feeds WHERE symbol = 'INBOX-USD'") == 3
    finally:
        await pool.close()


async def test_a_tick_without_a_partition_is_stored_counted_then_adopted(fresh_url: str) -> None:
    await migrate(fresh_url)
    pool = await asyncpg.create_pool(fresh_url, min_size=1, max_size=3)
    try:
        store = TickStore(pool)
        now_ms = time.time_ns() // 1_000_000
        old_ms, jumped_ms = now_ms - 40 * DAY_MS, now_ms + 30 * DAY_MS  # an old backfill, a clock jump
        ticks = [
            (0, Tick("PART-USD", Decimal("1.5"), Decimal("2"), "sim", old_ms)),
            (1, Tick("PART-USD", Decimal("1.6"), Decimal("0"), "sim", now_ms)),
            (2, Tick("PART-USD", Decimal("1.7"), Decimal("1"), "sim", jumped_ms)),
        ]
        assert await store.insert(ticks, worker_id="w", batch_id="b") == {0, 1, 2}
        assert store.unplaced == 2
        assert await pool.fetchval(f"SELECT count(*) FROM {DEFAULT_PARTITION}") == 2
        assert await store.insert(ticks, worker_id="w", batch_id="b") == set()  # idempotent in DEFAULT too

        report = await TickPartitions(pool, clock_ms=lambda: now_ms).maintain()
        assert report.ran and report.adopted_ticks == 2
        old_day, jumped_day = today(old_ms).date(), today(jumped_ms).date()
        assert {partition_name(old_day), partition_name(jumped_day)} <= set(report.created)
        assert await pool.fetchval(f"SELECT count(*) FROM {DEFAULT_PARTITION}") == 0
        placed = await pool.fetch("SELECT tableoid::regclass::text AS part, price FROM price_feeds ORDER BY ts")
        assert [(r["part"], r["price"]) for r in placed] == [
            (partition_name(old_day), Decimal("1.5")),
            (partition_name(today(now_ms).date()), Decimal("1.6")),
            (partition_name(jumped_day), Decimal("1.7")),
        ]
        assert await store.insert(ticks, worker_id="w", batch_id="b") == set()  # and after the move
        assert store.unplaced == 2

        again = await TickPartitions(pool, clock_ms=lambda: now_ms).maintain()
        assert again.ran and (again.created, again.dropped, again.adopted_ticks) == ([], [], 0)
    finally:
        await pool.close()


async def test_retention_drops_whole_expired_days_and_keeps_the_rest(fresh_url: str) -> None:
    await migrate(fresh_url)
    pool = await asyncpg.create_pool(fresh_url, min_size=1, max_size=3)
    try:
        store = TickStore(pool)
        now_ms = time.time_ns() // 1_000_000
        days = range(0, 12)
        ticks = [(d, Tick("KEEP-USD", Decimal(d + 1), Decimal(0), "sim", now_ms - d * DAY_MS)) for d in days]
        assert await store.insert(ticks, worker_id="w", batch_id="b") == set(days)
        await TickPartitions(pool, clock_ms=lambda: now_ms).maintain()  # keep forever: nothing dropped
        assert await pool.fetchval("SELECT count(*) FROM price_feeds") == 12

        maintenance = TickPartitions(pool, retention_days=5, clock_ms=lambda: now_ms)
        report = await maintenance.maintain()
        today_ = today(now_ms).date()
        assert sorted(report.dropped) == sorted(partition_name(today_ - timedelta(days=d)) for d in range(6, 12))
        assert maintenance.dropped_total == 6
        kept = await pool.fetch("SELECT price FROM price_feeds ORDER BY ts DESC")
        assert [r["price"] for r in kept] == [Decimal(d + 1) for d in range(0, 6)]
        async with pool.acquire() as conn:
            names = await partitions(conn)
            # dropped, not merely detached: no table of an expired day is left
            left = await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = ANY($1::text[])", report.dropped)
        assert left == 0 and not set(report.dropped) & names
        assert partition_name(today_ - timedelta(days=5)) in names

        # an old tick arriving after its day was dropped lands in DEFAULT and the next run deletes it
        assert await store.insert(
            [(0, Tick("KEEP-USD", Decimal(99), Decimal(0), "sim", now_ms - 9 * DAY_MS))], worker_id="w", batch_id="c"
        ) == {0}
        assert (await maintenance.maintain()).purged_ticks == 1
        assert await pool.fetchval(f"SELECT count(*) FROM {DEFAULT_PARTITION}") == 0
    finally:
        await pool.close()


async def test_only_one_core_maintains_at_a_time(fresh_url: str) -> None:
    await migrate(fresh_url)
    pool = await asyncpg.create_pool(fresh_url, min_size=1, max_size=3)
    other = await asyncpg.connect(fresh_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_ID)
        later_ms = time.time_ns() // 1_000_000 + 20 * DAY_MS
        report = await TickPartitions(pool, clock_ms=lambda: later_ms).maintain()
        assert not report.ran and report.created == []
        await other.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_ID)
        report = await TickPartitions(pool, clock_ms=lambda: later_ms).maintain()
        assert report.ran and partition_name(today(later_ms).date() + timedelta(days=AHEAD_DAYS)) in report.created
    finally:
        await other.close()
        await pool.close()


async def test_a_step_that_meets_a_long_read_gives_up_and_a_later_run_does_it(fresh_url: str) -> None:
    await migrate(fresh_url)
    pool = await asyncpg.create_pool(fresh_url, min_size=1, max_size=3)
    reader = await asyncpg.connect(fresh_url)
    try:
        later_ms = time.time_ns() // 1_000_000 + 20 * DAY_MS
        async with reader.transaction():  # a long read holds price_feeds
            await reader.execute("LOCK TABLE price_feeds IN ACCESS SHARE MODE")
            report = await TickPartitions(pool, clock_ms=lambda: later_ms).maintain()
        assert report.ran and report.created == [] and report.deferred
        report = await TickPartitions(pool, clock_ms=lambda: later_ms).maintain()
        assert report.created and not report.deferred
    finally:
        await reader.close()
        await pool.close()


async def test_the_supervised_loop_follows_the_clock_and_the_metrics_count(fresh_url: str) -> None:
    await migrate(fresh_url)
    pool = await asyncpg.create_pool(fresh_url, min_size=1, max_size=3)
    try:
        now_ms = [time.time_ns() // 1_000_000]
        store = TickStore(pool)
        maintenance = TickPartitions(pool, retention_days=2, clock_ms=lambda: now_ms[0], interval_s=0.05)
        registry = CollectorRegistry()
        registry.register(TickPartitionMetrics(lambda: store.unplaced, maintenance))
        jumped = now_ms[0] + 20 * DAY_MS
        await store.insert([(0, Tick("LOOP-USD", Decimal(1), Decimal(0), "sim", jumped))], worker_id="w", batch_id="b")
        task = asyncio.create_task(maintenance.run())
        try:
            now_ms[0] = jumped  # the clock jumps: the loop catches up on its own
            last_day = partition_name(today(jumped).date() + timedelta(days=AHEAD_DAYS))
            for _ in range(200):  # polled: the loop has no event to wait on
                if last_day in await partitions_of(pool):
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert await pool.fetchval(f"SELECT count(*) FROM {DEFAULT_PARTITION}") == 0
        assert registry.get_sample_value("perseus_ticks_unpartitioned_total") == 1
        # the core's clock alone jumped: PostgreSQL's says the days of the migration are recent, so none expired
        assert registry.get_sample_value("perseus_tick_partitions_dropped_total") == maintenance.dropped_total == 0
        assert partition_name(today(now_ms[0] - 20 * DAY_MS).date()) in await partitions_of(pool)
    finally:
        await pool.close()


async def partitions_of(pool: asyncpg.Pool) -> set[str]:
    async with pool.acquire() as conn:
        return await partitions(conn)


async def test_many_stray_days_are_adopted_newest_first_over_several_runs(fresh_url: str) -> None:
    await migrate(fresh_url)
    pool = await asyncpg.create_pool(fresh_url, min_size=1, max_size=3)
    try:
        now_ms = time.time_ns() // 1_000_000
        # Days 2..41 back: yesterday's partition is one maintenance creates ahead of any stray.
        ticks = [(d, Tick("MANY-USD", Decimal(d), Decimal(0), "sim", now_ms - d * DAY_MS)) for d in range(2, 42)]
        store = TickStore(pool)
        assert await store.insert(ticks, worker_id="w", batch_id="b") == set(range(2, 42))
        assert store.unplaced == 40
        maintenance = TickPartitions(pool, clock_ms=lambda: now_ms)
        first = await maintenance.maintain()
        assert first.more_strays and first.adopted_ticks == ADOPT_DAYS_PER_RUN
        newest = {partition_name(today(now_ms - d * DAY_MS).date()) for d in range(2, ADOPT_DAYS_PER_RUN + 2)}
        assert set(first.created) == newest | {partition_name(today(now_ms - DAY_MS).date())}
        second = await maintenance.maintain()
        assert not second.more_strays and second.adopted_ticks == 40 - ADOPT_DAYS_PER_RUN
        assert await pool.fetchval(f"SELECT count(*) FROM {DEFAULT_PARTITION}") == 0
        assert await pool.fetchval("SELECT count(*) FROM price_feeds WHERE symbol = 'MANY-USD'") == 40
    finally:
        await pool.close()


async def test_a_first_start_places_the_backfill_of_the_day_before_in_its_own_partition(fresh_url: str) -> None:
    """A first ``make run`` shortly after midnight backfills hours of yesterday: they go to yesterday's
    partition, not DEFAULT (which logged a "clock jump?" warning per batch)."""
    await migrate(fresh_url)
    pool = await asyncpg.create_pool(fresh_url, min_size=1, max_size=3)
    try:
        now_ms = time.time_ns() // 1_000_000
        assert (await TickPartitions(pool, clock_ms=lambda: now_ms).maintain()).ran
        midnight = today(now_ms).replace(hour=0, minute=0, second=0, microsecond=0)
        yesterday_noon = midnight - timedelta(hours=12)
        store = TickStore(pool)
        tick = Tick("BACK-USD", Decimal(1), Decimal(0), "sim", int(yesterday_noon.timestamp() * 1000))
        assert await store.insert([(1, tick)], worker_id="w", batch_id="b") == {1}
        assert store.unplaced == 0
        assert await pool.fetchval(f"SELECT count(*) FROM {DEFAULT_PARTITION}") == 0
    finally:
        await pool.close()
