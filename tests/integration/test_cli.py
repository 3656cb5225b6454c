"""``perseus keys list --json`` and ``perseus migrate --status`` run as a user runs them, on a real PostgreSQL."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from core.adapters.apikeys import authenticate, create_key, hash_key, revoke_key
from core.adapters.migrations import EXIT_PENDING, load_migrations, migrate
from tests.support.databases import scratch_database
from tests.support.processes import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
async def fresh_url(admin_database_url: str) -> AsyncIterator[str]:
    """An empty database of this test alone."""
    async with scratch_database(admin_database_url, f"perseus_cli_{secrets.token_hex(4)}") as url:
        yield url


async def test_keys_list_json_lists_every_key_without_a_secret(fresh_url: str) -> None:
    await migrate(fresh_url)
    conn = await asyncpg.connect(fresh_url)
    try:
        pro_key, pro = await create_key(conn, tier="pro", name="dashboard")
        free_key, free = await create_key(conn, tier="free")
        assert await revoke_key(conn, str(free.id))
    finally:
        await conn.close()

    result = run_cli(["keys", "list", "--json"], {"PERSEUS_DATABASE_URL": fresh_url})
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [item["id"] for item in listed] == [pro.id, free.id]
    first, second = listed
    assert set(first) == {"id", "name", "tier", "prefix", "created", "last_used", "revoked"}
    assert (first["name"], first["tier"], first["prefix"], first["revoked"]) == ("dashboard", "pro", pro.prefix, None)
    assert (second["name"], second["tier"]) == ("", "free")
    created = datetime.fromisoformat(first["created"])
    assert created.tzinfo is not None and abs((datetime.now(UTC) - created).total_seconds()) < 300
    assert datetime.fromisoformat(second["revoked"]) >= datetime.fromisoformat(second["created"])
    for key in (pro_key, free_key):
        assert key not in result.stdout and key[len(pro.prefix) :] not in result.stdout
        assert hash_key(key).hex() not in result.stdout


async def test_keys_list_json_of_no_keys_is_an_empty_array(fresh_url: str) -> None:
    await migrate(fresh_url)
    result = run_cli(["keys", "list", "--json"], {"PERSEUS_DATABASE_URL": fresh_url})
    assert (result.returncode, json.loads(result.stdout)) == (0, []), result.stderr


async def test_keys_revoke_of_an_unknown_id_says_how_to_find_one(fresh_url: str) -> None:
    await migrate(fresh_url)
    result = run_cli(["keys", "revoke", "42"], {"PERSEUS_DATABASE_URL": fresh_url})
    assert result.returncode == 1
    assert result.stderr == (
        "perseus keys revoke: no active key with id or prefix '42'; list them with `perseus keys list`\n"
    )


async def test_keys_create_replace_rotates_the_named_key_and_leaves_the_others(fresh_url: str) -> None:
    """``perseus up``'s dev key rotation: ``--replace`` revokes the active keys of that name, no other."""
    await migrate(fresh_url)
    env = {"PERSEUS_DATABASE_URL": fresh_url}
    other = run_cli(["keys", "create", "--tier", "free", "--name", "someone else's"], env)
    first = run_cli(["keys", "create", "--tier", "internal", "--name", "dev", "--replace"], env)
    second = run_cli(["keys", "create", "--tier", "internal", "--name", "dev", "--replace"], env)
    assert (other.returncode, first.returncode, second.returncode) == (0, 0, 0), first.stderr + second.stderr
    assert "revoked 0 active key(s) named 'dev'" in first.stdout
    assert "revoked 1 active key(s) named 'dev'" in second.stdout
    keys = [result.stdout.strip().splitlines()[-1] for result in (other, first, second)]
    conn = await asyncpg.connect(fresh_url)
    try:
        active = [await authenticate(conn, key) is not None for key in keys]
    finally:
        await conn.close()
    assert active == [True, False, True]

    nameless = run_cli(["keys", "create", "--tier", "internal", "--replace"], env)
    assert nameless.returncode == 1 and "needs its --name" in nameless.stderr


async def test_migrate_status_pending_then_current_and_changes_nothing(fresh_url: str) -> None:
    env = {"PERSEUS_DATABASE_URL": fresh_url}
    shipped = load_migrations()

    before = run_cli(["migrate", "--status"], env)
    assert before.returncode == EXIT_PENDING, before.stderr
    lines = before.stdout.splitlines()
    assert [line.split() for line in lines[:-1]] == [["pending", m.label, "-"] for m in shipped]
    assert lines[-1] == f"{len(shipped)} migrations pending; apply with `perseus migrate`"
    conn = await asyncpg.connect(fresh_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None  # read-only
        await migrate(conn, migrations=shipped[:-1])
        partly = run_cli(["migrate", "--status"], env)
        assert partly.returncode == EXIT_PENDING, partly.stderr
        states = [line.split()[:2] for line in partly.stdout.splitlines()[:-1]]
        assert states == [["applied", m.label] for m in shipped[:-1]] + [["pending", shipped[-1].label]]
        assert partly.stdout.splitlines()[-1] == "1 migration pending; apply with `perseus migrate`"

        assert run_cli(["migrate"], env).returncode == 0
        after = run_cli(["migrate", "--status"], env)
        assert after.returncode == 0, after.stderr
        assert after.stdout.splitlines()[-1] == "schema up to date"
        assert all(line.startswith("applied ") for line in after.stdout.splitlines()[:-1])

        # A database migrated by newer code: still current for this one, and the extra row is shown.
        await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ('9999', 'later', 'x')")
        newer = run_cli(["migrate", "--status"], env)
        assert newer.returncode == 0, newer.stderr
        assert newer.stdout.splitlines()[-2].split()[:2] == ["unknown", "9999_later"]

        await conn.execute("UPDATE schema_migrations SET checksum = 'deadbeef' WHERE version = '0001'")
        changed = run_cli(["migrate", "--status"], env)
    finally:
        await conn.close()
    assert changed.returncode == 1
    assert changed.stdout.splitlines()[0].split()[:2] == ["changed", shipped[0].label]
    assert len(changed.stderr.splitlines()) == 1
    assert f"migration {shipped[0].label} changed after it was applied" in changed.stderr


def test_migrate_status_of_an_unreachable_database_is_one_line() -> None:
    result = run_cli(["migrate", "--status"], {"PERSEUS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/test"})
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "PERSEUS_DATABASE_URL" in result.stderr
    assert result.stdout == ""
