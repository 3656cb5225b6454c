"""Schema migrations against a real PostgreSQL: idempotent, locked, checksummed, and the schema they build.

Tests that need a database nobody has migrated yet create their own (the
session database is shared with other modules of this process, which may
have migrated it already), and drop it at the end.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from core.adapters.migrations import Migration, MigrationError, load_migrations, migrate
from core.adapters.postgres import check, create_pool
from core.settings import StartupError
from tests.support.databases import scratch_database
from tests.support.processes import run_cli

pytestmark = pytest.mark.integration

EXPECTED_COLUMNS = {
    "schema_migrations": set("version name checksum applied_at".split()),
    "exchanges": set("id name display_name simulated created_at".split()),
    "symbols": set("id exchange_id symbol base quote active created_at".split()),
    "api_keys": set("id name tier key_hash prefix created_at revoked_at last_used_at".split()),
    "price_feeds": set(
        "id symbol price volume source ts bid ask exchange_ts worker_id batch_id index_in_batch ingested_at "
        "trade_id".split()
    ),
    "candles": set(
        "exchange_id symbol timeframe open_time open high low close volume is_synthetic sequence_num updated_at".split()
    ),
    "alerts": set(
        "id exchange_id symbol timeframe alert_type signal_type direction strength trigger_value signal_delta "
        "trigger_label price triggered_at created_at".split()
    ),
    "shared_secrets": set("name value".split()),
    "alert_outbox": {"alert_id"},
    "candle_inbox": set("source symbol price volume ts tick_id".split()),  # 0009 dropped its unread id
}
# index name -> the column list its definition must contain
EXPECTED_INDEXES = {
    "price_feeds_symbol_ts_idx": "(symbol, ts DESC)",
    "price_feeds_symbol_source_ts_key": "(symbol, source, ts DESC, price, volume, trade_id)",
    "candles_pkey": "(exchange_id, symbol, timeframe, open_time)",
    "alerts_history_idx": "(exchange_id, symbol, timeframe, triggered_at DESC, id DESC)",
    "alerts_crossing_key": "(exchange_id, symbol, timeframe, alert_type, trigger_label, triggered_at)",
    "api_keys_key_hash_key": "(key_hash)",
    "exchanges_name_key": "(name)",
    "symbols_exchange_symbol_key": "(exchange_id, symbol)",
}
NUMERIC_COLUMNS = (
    {("price_feeds", c) for c in ("price", "volume", "bid", "ask")}
    | {("candles", c) for c in ("open", "high", "low", "close", "volume")}
    | {("alerts", "price")}
)


@pytest.fixture
async def fresh_url(admin_database_url: str) -> AsyncIterator[str]:
    """An empty database of this test alone."""
    async with scratch_database(admin_database_url, f"perseus_mig_{secrets.token_hex(4)}") as url:
        yield url


@pytest.fixture
async def migrated(fresh_url: str) -> AsyncIterator[asyncpg.Connection]:
    assert await migrate(fresh_url) == [m.version for m in load_migrations()]
    conn = await asyncpg.connect(fresh_url)
    try:
        yield conn
    finally:
        await conn.close()


async def test_first_run_applies_every_file_and_records_it_then_nothing_more(fresh_url: str) -> None:
    shipped = load_migrations()
    assert [m.version for m in shipped][:1] == ["0001"]
    assert await migrate(fresh_url) == [m.version for m in shipped]
    assert await migrate(fresh_url) == []
    conn = await asyncpg.connect(fresh_url)
    try:
        rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
        (m.version, m.name, m.checksum) for m in shipped
    ]
    assert all(r["applied_at"] <= datetime.now(UTC) for r in rows)


async def test_the_session_database_migrates_idempotently(database_url: str) -> None:
    await migrate(database_url)  # other modules may have migrated it already
    assert await migrate(database_url) == []


async def test_every_table_column_and_read_path_index_exists(migrated: asyncpg.Connection) -> None:
    rows = await migrated.fetch(
        "SELECT table_name, column_name, data_type, numeric_precision FROM information_schema.columns "
        "WHERE table_schema = 'public'"
    )
    columns: dict[str, set[str]] = {}
    for row in rows:
        columns.setdefault(row["table_name"], set()).add(row["column_name"])
    for table, expected in EXPECTED_COLUMNS.items():
        assert expected <= columns.get(table, set()), table
    types = {(r["table_name"], r["column_name"]): (r["data_type"], r["numeric_precision"]) for r in rows}
    for column in NUMERIC_COLUMNS:
        assert types[column] == ("numeric", None), column  # NUMERIC with no precision cap
    indexes = {r["indexname"]: r["indexdef"] for r in await migrated.fetch("SELECT * FROM pg_indexes")}
    for name, definition in EXPECTED_INDEXES.items():
        assert name in indexes, name
        assert definition in indexes[name], indexes[name]
    assert "UNIQUE" in indexes["price_feeds_symbol_source_ts_key"]


async def test_the_four_exchanges_are_seeded(migrated: asyncpg.Connection) -> None:
    rows = await migrated.fetch("SELECT name, display_name, simulated FROM exchanges ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("sim", "Simulated exchange", True),
        ("coinbase", "Coinbase", False),
        ("binance", "Binance", False),
        ("kraken", "Kraken", False),
    ]


async def test_prices_keep_every_digit_and_a_retried_batch_is_stored_once(migrated: asyncpg.Connection) -> None:
    price = Decimal("67234.123456789012345678901234567890123")
    ts = datetime(2025, 10, 9, 12, 34, 56, 123000, tzinfo=UTC)
    insert = (
        "INSERT INTO price_feeds (symbol, price, volume, source, ts, bid, batch_id, index_in_batch) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (symbol, source, ts, price, volume, trade_id) DO NOTHING"
    )
    for batch_id in ("batch-1", "batch-1", "batch-retry-with-new-id"):
        await migrated.execute(insert, "BTC-USD", price, Decimal("0.000000001"), "coinbase", ts, None, batch_id, 0)
    rows = await migrated.fetch("SELECT price, volume, bid FROM price_feeds")
    assert [(r["price"], r["volume"], r["bid"]) for r in rows] == [(price, Decimal("0.000000001"), None)]
    assert str(rows[0]["price"]) == "67234.123456789012345678901234567890123"


async def test_trade_ids_join_the_identity_of_ticks_already_stored(fresh_url: str) -> None:
    """0006 on a database with ticks: every row kept (trade id ''), the old identity still deduplicates a tick
    without a trade id, and two trades alike in all but their trade id are two rows."""
    before = [m for m in load_migrations() if m.version < "0006"]
    assert await migrate(fresh_url, migrations=before) == [m.version for m in before]
    conn = await asyncpg.connect(fresh_url)
    try:
        ts = datetime(2025, 10, 9, 12, 34, 56, tzinfo=UTC)
        await conn.execute(
            "INSERT INTO price_feeds (symbol, price, volume, source, ts) "
            "SELECT 'BTC-USD', 100 + i, 1, 'sim', $1 FROM generate_series(1, 50) AS i",
            ts,
        )
        ids = await conn.fetch("SELECT id, price FROM price_feeds ORDER BY id")
        assert await migrate(fresh_url) == [m.version for m in load_migrations() if m.version >= "0006"]
        assert await conn.fetch("SELECT id, price FROM price_feeds ORDER BY id") == ids
        assert await conn.fetchval("SELECT count(*) FROM price_feeds WHERE trade_id <> ''") == 0
        insert = (
            "INSERT INTO price_feeds (symbol, price, volume, source, ts, trade_id) "
            "VALUES ('BTC-USD', $1, 1, 'sim', $2, $3) "
            "ON CONFLICT (symbol, source, ts, price, volume, trade_id) DO NOTHING RETURNING id"
        )
        assert await conn.fetchval(insert, Decimal(101), ts, "") is None  # stored before the migration: a retry
        assert await conn.fetchval(insert, Decimal(101), ts, "T-1") is not None  # the same, with a trade id
        assert await conn.fetchval(insert, Decimal(101), ts, "T-2") is not None  # another genuine trade
        assert await conn.fetchval(insert, Decimal(101), ts, "T-1") is None  # T-1 delivered again
        assert await conn.fetchval("SELECT count(*) FROM price_feeds") == 52
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("sql", "args"),
    [
        ("INSERT INTO price_feeds (symbol, price, source, ts) VALUES ($1, $2, 's', now())", ("BTC/USD", 1)),
        ("INSERT INTO price_feeds (symbol, price, source, ts) VALUES ($1, $2, 's', now())", ("BTC-USD", 0)),
        ("INSERT INTO price_feeds (symbol, price, source, ts) VALUES ($1, $2, 's', now())", ("BTC-USD", "NaN")),
        ("INSERT INTO api_keys (tier, key_hash, prefix) VALUES ($1, $2, 'p')", ("gold", b"x" * 32)),
        ("INSERT INTO api_keys (tier, key_hash, prefix) VALUES ($1, $2, 'p')", ("free", b"short")),
        (
            "INSERT INTO candles (exchange_id, symbol, timeframe, open_time, open, high, low, close, sequence_num) "
            "VALUES (1, 'BTC-USD', $1, now(), 1, 1, 1, 1, $2)",
            ("2h", 1),
        ),
        ("INSERT INTO symbols (exchange_id, symbol, base, quote) VALUES (1, $1, $2, 'USD')", ("BTC-EUR", "BTC")),
    ],
)
async def test_constraints_refuse_bad_rows(migrated: asyncpg.Connection, sql: str, args: tuple[object, ...]) -> None:
    values = [Decimal(a) if a == "NaN" else a for a in args]
    with pytest.raises(asyncpg.IntegrityConstraintViolationError):
        await migrated.execute(sql, *values)


async def test_an_alert_for_the_same_crossing_is_stored_once(migrated: asyncpg.Connection) -> None:
    insert = (
        "INSERT INTO alerts (exchange_id, symbol, timeframe, alert_type, signal_type, direction, strength, "
        "trigger_value, signal_delta, trigger_label, price, triggered_at) "
        "VALUES (2, 'BTC-USD', '15m', 'macdv', 'momentum_signal', 'bullish', 'strong', 85.3, 12.4, 'level_3', "
        "$1, '2026-02-19T12:00:00Z') ON CONFLICT DO NOTHING RETURNING id"
    )
    assert await migrated.fetchval(insert, Decimal("42350.5")) is not None
    assert await migrated.fetchval(insert, Decimal("42350.5")) is None
    assert await migrated.fetchval("SELECT count(*) FROM alerts") == 1


async def test_concurrent_migrations_apply_each_file_once(fresh_url: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_url) for _ in range(4)))
    shipped = [m.version for m in load_migrations()]
    assert sorted(results, key=len, reverse=True) == [shipped, [], [], []]


async def test_two_migrate_processes_at_once_both_succeed(fresh_url: str) -> None:
    env = {"PERSEUS_DATABASE_URL": fresh_url}
    first, second = await asyncio.gather(*(asyncio.to_thread(run_cli, ["migrate"], env) for _ in range(2)))
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    outputs = sorted([first.stdout.strip(), second.stdout.strip()])
    applied_all = "\n".join(f"applied {m.label}" for m in load_migrations())
    assert outputs == [applied_all, "schema up to date"]


async def test_a_changed_applied_migration_is_an_error(migrated: asyncpg.Connection, fresh_url: str) -> None:
    edited = [Migration(m.version, m.name, m.sql + "\n-- edited after release\n") for m in load_migrations()]
    with pytest.raises(MigrationError, match=r"0001_initial was changed after it was applied"):
        await migrate(fresh_url, migrations=edited)
    # The same through the CLI, with the recorded checksum tampered with instead.
    await migrated.execute("UPDATE schema_migrations SET checksum = 'deadbeef' WHERE version = '0001'")
    result = run_cli(["migrate"], {"PERSEUS_DATABASE_URL": fresh_url})
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_a_failing_migration_leaves_no_trace_and_is_retried(migrated: asyncpg.Connection, fresh_url: str) -> None:
    shipped = load_migrations()
    broken = Migration("9999", "broken", "CREATE TABLE half_done (x int); SELECT 1 / 0;")
    with pytest.raises(MigrationError, match="9999_broken failed"):
        await migrate(fresh_url, migrations=[*shipped, broken])
    assert await migrated.fetchval("SELECT to_regclass('half_done')") is None
    assert await migrated.fetchval("SELECT count(*) FROM schema_migrations WHERE version = '9999'") == 0
    fixed = Migration("9999", "broken", "CREATE TABLE half_done (x int);")
    assert await migrate(fresh_url, migrations=[*shipped, fixed]) == ["9999"]
    assert await migrated.fetchval("SELECT to_regclass('half_done')") is not None


async def test_migrate_accepts_a_connection_or_a_pool(fresh_url: str) -> None:
    conn = await asyncpg.connect(fresh_url)
    try:
        assert await migrate(conn) == [m.version for m in load_migrations()]
    finally:
        await conn.close()
    pool = await create_pool(fresh_url, min_size=1, max_size=2)
    try:
        assert await migrate(pool) == []
    finally:
        await pool.close()


async def test_migrate_cli_reports_what_it_did(fresh_url: str) -> None:
    env = {"PERSEUS_DATABASE_URL": fresh_url}
    first = run_cli(["migrate"], env)
    applied_all = "".join(f"applied {m.label}\n" for m in load_migrations())
    assert (first.returncode, first.stdout) == (0, applied_all), first.stderr
    again = run_cli(["migrate"], env)
    assert (again.returncode, again.stdout) == (0, "schema up to date\n"), again.stderr


# core/adapters/postgres.py, which the migrations connect through --------------------------------


async def test_pool_check_reports_latency(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2, timeout=3)
    try:
        latency = await check(pool)
    finally:
        await pool.close()
    assert 0 < latency < 5_000


@pytest.mark.parametrize("path", ["127.0.0.1:1/test", "127.0.0.1:5432/perseus_no_such_database"])
async def test_unreachable_database_is_one_startup_line_without_the_password(path: str) -> None:
    url = f"postgresql://postgres:s3cret-pw@{path}"
    for attempt in (create_pool(url, timeout=2), migrate(url)):
        with pytest.raises(StartupError) as info:
            await attempt
        message = str(info.value)
        assert message.startswith("PERSEUS_DATABASE_URL: cannot reach PostgreSQL at " + path)
        assert "\n" not in message
        assert "s3cret-pw" not in message
