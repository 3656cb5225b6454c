"""API keys against a real PostgreSQL, and ``perseus keys`` / ``perseus migrate`` as a user runs them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core.adapters.apikeys import (
    AmbiguousKey,
    authenticate,
    create_key,
    format_table,
    list_keys,
    revoke_key,
)
from core.adapters.migrations import migrate
from core.domain.keys import (
    FREE_MAX_WS_CONNECTIONS,
    FREE_REQUESTS_PER_MINUTE,
    PRO_REQUESTS_PER_MINUTE,
    TIER_LIMITS,
    UNLIMITED,
    ApiKeyRecord,
    KeyTier,
)
from tests.support.processes import run_cli

pytestmark = pytest.mark.integration

UNREACHABLE_URL = "postgresql://postgres@127.0.0.1:1/test"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    await migrate(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.mark.parametrize("tier", list(KeyTier))
async def test_a_created_key_authenticates_with_its_tier(conn: asyncpg.Connection, tier: KeyTier) -> None:
    key, record = await create_key(conn, tier=tier, name=f"test {tier}")
    assert re.fullmatch(r"pk_[a-z]+_[A-Za-z0-9]{43}", key)
    assert key.startswith(record.prefix)
    assert len(record.prefix) < len(key) // 2
    assert (record.tier, record.name, record.revoked_at) == (tier, f"test {tier}", None)
    found = await authenticate(conn, key)
    assert found is not None
    assert (found.id, found.tier, found.prefix) == (record.id, tier, record.prefix)


async def test_the_key_itself_is_stored_nowhere(conn: asyncpg.Connection) -> None:
    key, record = await create_key(conn, tier="pro", name="secret holder")
    row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", record.id)
    everything = " ".join(str(value) for value in row.values())
    assert key not in everything
    assert key[len(record.prefix) :] not in everything  # nor its secret part
    assert bytes(row["key_hash"]) == hashlib.sha256(key.encode()).digest()
    assert key not in repr(record)


async def test_each_key_is_unique(conn: asyncpg.Connection) -> None:
    keys = {(await create_key(conn, tier="free"))[0] for _ in range(20)}
    assert len(keys) == 20


async def test_revoked_and_unknown_keys_do_not_authenticate(conn: asyncpg.Connection) -> None:
    key, record = await create_key(conn, tier="free", name="to revoke")
    assert await revoke_key(conn, str(record.id)) is True
    assert await authenticate(conn, key) is None
    assert await revoke_key(conn, str(record.id)) is False  # nothing left to revoke
    listed = {r.id: r for r in await list_keys(conn)}
    assert listed[record.id].revoked_at is not None
    assert record.id not in {r.id for r in await list_keys(conn, include_revoked=False)}


@pytest.mark.parametrize(
    "candidate",
    ["", "pk_pro_", "not a key", "pk_pro_" + "A" * 43, "x" * 10_000, "pk_pro_" + "A" * 42 + "\x00"],
)
async def test_unknown_or_malformed_keys_do_not_authenticate(conn: asyncpg.Connection, candidate: str) -> None:
    assert await authenticate(conn, candidate) is None


async def test_a_near_miss_of_a_real_key_does_not_authenticate(conn: asyncpg.Connection) -> None:
    key, _ = await create_key(conn, tier="admin")
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert await authenticate(conn, flipped) is None
    assert await authenticate(conn, key.upper()) is None
    assert await authenticate(conn, key + "x") is None


async def test_revoke_by_prefix_by_key_and_refusal_of_an_ambiguous_prefix(conn: asyncpg.Connection) -> None:
    key_a, record_a = await create_key(conn, tier="internal")
    key_b, _ = await create_key(conn, tier="internal")
    with pytest.raises(AmbiguousKey):
        await revoke_key(conn, "pk_int_")
    assert await authenticate(conn, key_a) is not None  # nothing was revoked
    assert await revoke_key(conn, record_a.prefix) is True
    assert await authenticate(conn, key_a) is None
    assert await revoke_key(conn, key_b) is True  # the full key works too
    assert await authenticate(conn, key_b) is None
    assert await revoke_key(conn, "pk_int_nosuchprefix") is False
    assert await revoke_key(conn, "99999999999999999999999") is False


async def test_record_use_sets_last_used_at(conn: asyncpg.Connection) -> None:
    key, record = await create_key(conn, tier="pro")
    assert record.last_used_at is None
    await authenticate(conn, key)
    assert await conn.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", record.id) is None
    await authenticate(conn, key, record_use=True)
    assert await conn.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", record.id) is not None


async def test_invalid_tier_or_name_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(ValueError):
        await create_key(conn, tier="gold")
    with pytest.raises(ValueError, match="name"):
        await create_key(conn, tier="free", name="n" * 201)


def test_tier_limits_are_the_contract_values() -> None:
    assert TIER_LIMITS[KeyTier.FREE].requests_per_minute == FREE_REQUESTS_PER_MINUTE == 1000
    assert TIER_LIMITS[KeyTier.FREE].max_ws_connections == FREE_MAX_WS_CONNECTIONS == 5
    assert TIER_LIMITS[KeyTier.PRO].requests_per_minute == PRO_REQUESTS_PER_MINUTE == 10_000
    for tier in (KeyTier.INTERNAL, KeyTier.ADMIN):
        assert TIER_LIMITS[tier].requests_per_minute == UNLIMITED == 0
    assert set(TIER_LIMITS) == set(KeyTier)


def test_list_table_never_shows_a_hash() -> None:
    from datetime import UTC, datetime

    record = ApiKeyRecord(7, "ci", KeyTier.PRO, "pk_pro_abcdefgh", datetime(2026, 1, 2, 3, 4, tzinfo=UTC), None)
    header, line = format_table([record])
    assert header.split()[:3] == ["ID", "TIER", "PREFIX"]
    assert line.split()[:4] == ["7", "pro", "pk_pro_abcdefgh", "ci"]
    assert "2026-01-02 03:04 UTC" in line and line.endswith("active")


# The CLI, as a user (and the `perseus up` supervisor) runs it ---------------------------------


async def test_keys_create_prints_the_key_alone_on_the_last_line(
    base_env: dict[str, str], conn: asyncpg.Connection
) -> None:
    result = run_cli(["keys", "create", "--tier", "pro", "--name", "from cli"], base_env)
    assert result.returncode == 0, result.stderr
    key = result.stdout.splitlines()[-1]
    assert key == key.strip() and " " not in key
    record = await authenticate(conn, key)
    assert record is not None
    assert (record.tier, record.name) == (KeyTier.PRO, "from cli")

    listing = run_cli(["keys", "list"], base_env)
    assert listing.returncode == 0, listing.stderr
    assert record.prefix in listing.stdout
    assert key not in listing.stdout
    assert key[len(record.prefix) :] not in listing.stdout

    revoked = run_cli(["keys", "revoke", str(record.id)], base_env)
    assert revoked.returncode == 0, revoked.stderr
    assert await authenticate(conn, key) is None


async def test_keys_create_defaults_to_the_free_tier(base_env: dict[str, str], conn: asyncpg.Connection) -> None:
    result = run_cli(["keys", "create"], base_env)
    assert result.returncode == 0, result.stderr
    record = await authenticate(conn, result.stdout.splitlines()[-1])
    assert record is not None and record.tier is KeyTier.FREE


@pytest.mark.usefixtures("conn")
def test_keys_revoke_of_nothing_exits_1_with_a_message(base_env: dict[str, str]) -> None:
    result = run_cli(["keys", "revoke", "pk_pro_doesnotexist"], base_env)
    assert result.returncode == 1
    assert "no active key" in result.stderr


@pytest.mark.parametrize("args", [["migrate"], ["keys", "list"], ["keys", "create", "--tier", "pro"]])
def test_an_unreachable_database_is_one_line_on_stderr(args: list[str]) -> None:
    result = run_cli(args, {"PERSEUS_DATABASE_URL": UNREACHABLE_URL})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PERSEUS_DATABASE_URL" in lines[0] and "cannot reach PostgreSQL at 127.0.0.1:1/test" in lines[0]
    assert result.stdout == ""


def test_a_missing_database_url_names_the_variable() -> None:
    result = run_cli(["keys", "list"], {"PERSEUS_DATABASE_URL": ""})
    assert result.returncode != 0
    assert "PERSEUS_DATABASE_URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
