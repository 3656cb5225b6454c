"""Embedded PostgreSQL and Redis, the detached CI command, and ``perseus up`` on top of them.

Real servers in temporary data directories; none of the machine's own servers is used. Data
directories come from ``tempfile.mkdtemp`` (mode 0700, like ``mktemp -d`` in ``.ci/run``) rather
than pytest's ``tmp_path``, whose private parent a root-run PostgreSQL user could not reach.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis

from core.settings import StartupError
from perseus_cli.devstack.pg_install import PgInstall
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.valkey import EmbeddedRedis
from tests.support.devstack import SUCCEED, StartUp, alive, still_alive, up_starter
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

MACHINE_PORTS = {5432, 6379}
AS_ROOT = os.geteuid() == 0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="perseus-devstack-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[StartUp]:
    yield from up_starter(tmp_path)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (PostgreSQL keeps its argv)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def uid_of(pid: int) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
    return int(line.split()[2])  # effective uid


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


# ---------------------------------------------------------------- PostgreSQL


async def test_postgres_serves_keeps_data_across_restarts_and_stops_cleanly(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    server.start()
    first_pid = server.pid
    assert first_pid is not None and alive(first_pid)
    assert urlsplit(server.url).hostname == "127.0.0.1"
    assert port_of(server.url) not in MACHINE_PORTS
    if AS_ROOT:
        assert uid_of(first_pid) != 0
    conn = await asyncpg.connect(server.url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before restart')")
    finally:
        await conn.close()
    server.stop()
    assert still_alive([first_pid]) == []
    assert processes_mentioning(str(data_dir)) == []
    server.stop()  # idempotent

    with EmbeddedPostgres(data_dir) as again:
        assert again.pid != first_pid
        conn = await asyncpg.connect(again.url)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "before restart"
        finally:
            await conn.close()
        second_pid = again.pid
    assert second_pid is not None and still_alive([second_pid]) == []
    assert (data_dir / "postgres" / "pgdata" / "PG_VERSION").exists()


def test_postgres_that_cannot_start_raises_one_line_and_leaves_nothing_running(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir):
        pass
    (data_dir / "postgres" / "pgdata" / "postgresql.auto.conf").write_text("shared_buffers = 'plenty'\n")

    with pytest.raises(StartupError) as caught:
        EmbeddedPostgres(data_dir).start()

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("embedded PostgreSQL exited with code 1 during startup: FATAL:")
    assert "postgresql.auto.conf" in message and "postgres.log" in message
    assert processes_mentioning(str(data_dir)) == []
    assert not (data_dir / "postgres" / "server.json").exists()


async def test_postgres_refuses_tcp_without_its_password(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as server:
        password = server.password
        assert password is not None and f":{password}@" in server.url
        assert stat.S_IMODE((data_dir / "postgres" / "password").stat().st_mode) == 0o600
        assert stat.S_IMODE((data_dir / "postgres" / "server.json").stat().st_mode) == 0o600
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres", timeout=5)
        with pytest.raises(asyncpg.InvalidPasswordError):  # replication connections too (pg_basebackup's)
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres?replication=true", timeout=5)
        conn = await asyncpg.connect(server.url, timeout=5)
        await conn.close()
    with EmbeddedPostgres(data_dir) as again:  # the password is kept: the URL stays the same
        assert again.password == password
    shutil.rmtree(data_dir / "postgres" / "pgdata")  # starting over with a new cluster, the password file kept
    with EmbeddedPostgres(data_dir) as afresh:
        assert afresh.password == password
        conn = await asyncpg.connect(afresh.url, timeout=5)
        await conn.close()


async def test_postgres_made_by_an_older_version_gets_a_password_and_keeps_its_data(data_dir: Path) -> None:
    """Versions before issue 16 left a cluster made by ``initdb --auth=trust`` and no ``password`` file: every
    local TCP connection was the superuser. Such a cluster still starts, and then asks for a password."""
    old = EmbeddedPostgres(data_dir)
    old._prepare_dir()  # what an older version's start did: directories, binaries, initdb with trust
    old._install = old._usable_install(PgInstall.bundled())
    old._initdb()
    old._single_user("CREATE TABLE kept_from_before (v text)")
    hba = data_dir / "postgres" / "pgdata" / "pg_hba.conf"
    assert "trust" in hba.read_text() and not (data_dir / "postgres" / "password").exists()

    with EmbeddedPostgres(data_dir) as server:
        assert server.password is not None
        assert "trust" not in hba.read_text()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres", timeout=5)
        conn = await asyncpg.connect(server.url, timeout=5)
        try:
            assert await conn.fetchval("SELECT count(*) FROM kept_from_before") == 0
        finally:
            await conn.close()


@pytest.mark.parametrize("server_class", [EmbeddedPostgres, EmbeddedRedis])
def test_a_second_server_on_the_same_data_dir_is_refused(
    data_dir: Path, server_class: type[EmbeddedPostgres] | type[EmbeddedRedis]
) -> None:
    with server_class(data_dir) as first:
        with pytest.raises(StartupError, match="already running"):
            server_class(data_dir).start()
        assert first.pid is not None and alive(first.pid)


# ---------------------------------------------------------------- Redis


def test_redis_serves_persists_and_stops_cleanly(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir)
    server.start()
    pid = server.pid
    assert pid is not None
    assert urlsplit(server.url).hostname == "127.0.0.1"
    assert port_of(server.url) not in MACHINE_PORTS
    client = redis.Redis.from_url(server.url)
    try:
        client.set("perseus:kept", "yes")
        assert client.get("perseus:kept") == b"yes"
    finally:
        client.close()
    server.stop()
    assert still_alive([pid]) == []
    server.stop()  # idempotent

    with EmbeddedRedis(data_dir) as again:
        client = redis.Redis.from_url(again.url)
        try:
            assert client.get("perseus:kept") == b"yes"
        finally:
            client.close()


def test_redis_exits_on_sigterm_even_when_it_cannot_save(data_dir: Path) -> None:
    """SIGTERM is also its parent-death signal; refusing it would leave an orphan."""
    server = EmbeddedRedis(data_dir)
    server.start()
    pid = server.pid
    assert pid is not None
    client = redis.Redis.from_url(server.url)
    try:
        client.set("perseus:doomed", "1")
    finally:
        client.close()
    shutil.rmtree(data_dir / "redis")

    os.kill(pid, signal.SIGTERM)

    try:
        assert still_alive([pid]) == []
    finally:
        server.stop()


def test_redis_reuses_its_port_when_free_and_moves_when_taken(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir) as server:
        first_port = server.port
    with EmbeddedRedis(data_dir) as server:
        assert server.port == first_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first_port))
        squatter.listen()
        with EmbeddedRedis(data_dir) as server:
            assert server.port != first_port
            client = redis.Redis.from_url(server.url)
            try:
                assert client.ping()
            finally:
                client.close()


# ---------------------------------------------------------------- processes


SERVERS_THEN_SLEEP = r"""
import json, sys, time
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.valkey import EmbeddedRedis
pg, rd = EmbeddedPostgres(sys.argv[1]), EmbeddedRedis(sys.argv[1])
pg.start(); rd.start()
print(json.dumps([pg.pid, rd.pid]), flush=True)
time.sleep(600)
"""


def test_servers_die_with_a_sigkilled_parent(data_dir: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", SERVERS_THEN_SLEEP, str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert all(alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()

    assert still_alive(pids, timeout=10) == []
    assert processes_mentioning(str(data_dir)) == []


def devstack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perseus_cli.devstack", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_detached_start_prints_exports_outlives_the_command_and_stop_ends_it(data_dir: Path) -> None:
    started = devstack("start", "--data-dir", str(data_dir))
    try:
        assert started.returncode == 0, started.stderr
        exports = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in started.stdout.splitlines()
        )
        assert set(exports) == {"PERSEUS_TEST_REDIS_URL", "PERSEUS_TEST_DATABASE_URL"}
        assert str(data_dir) in started.stderr  # the log says where the data lives
        records = [json.loads((data_dir / sub / "server.json").read_text()) for sub in ("postgres", "redis")]
        pids = [record["pid"] for record in records]
        assert all(alive(pid) for pid in pids)

        conn = await asyncpg.connect(exports["PERSEUS_TEST_DATABASE_URL"])
        try:
            assert await conn.fetchval("SELECT current_database()") == "postgres"
        finally:
            await conn.close()
        client = redis.Redis.from_url(exports["PERSEUS_TEST_REDIS_URL"])
        try:
            assert client.ping()
        finally:
            client.close()
    finally:
        stopped = devstack("stop", "--data-dir", str(data_dir))

    assert stopped.returncode == 0, stopped.stderr
    assert still_alive(pids) == []
    assert devstack("stop", "--data-dir", str(data_dir)).returncode == 0


# ---------------------------------------------------------------- running as root


@pytest.mark.skipif(not AS_ROOT, reason="only root runs PostgreSQL as another user")
def test_root_names_a_private_parent_the_postgres_user_cannot_reach() -> None:
    private = Path(tempfile.mkdtemp(prefix="perseus-private-"))  # mode 0700
    try:
        with pytest.raises(StartupError) as caught:
            EmbeddedPostgres(private / "nested" / "data").start()
        assert f"{private} is private" in str(caught.value)
        assert processes_mentioning(str(private)) == []
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.skipif(not AS_ROOT, reason="only root runs PostgreSQL as another user")
async def test_root_copies_binaries_the_postgres_user_cannot_reach(data_dir: Path) -> None:
    private = Path(tempfile.mkdtemp(prefix="perseus-private-venv-"))  # mode 0700, like /root
    try:
        (private / "site-packages").symlink_to(PgInstall.bundled().root)
        with EmbeddedPostgres(data_dir, install=PgInstall(private / "site-packages")) as server:
            assert server.pid is not None
            exe = os.readlink(f"/proc/{server.pid}/exe")
            assert exe.startswith(str(data_dir / "postgres" / "install"))
            conn = await asyncpg.connect(server.url)
            try:
                assert await conn.fetchval("SELECT 1") == 1
            finally:
                await conn.close()
    finally:
        shutil.rmtree(private, ignore_errors=True)


# ---------------------------------------------------------------- perseus up on embedded servers


def _written_env(pid_dir: Path) -> dict[str, str] | None:
    """The environment the fake core child wrote, once it is there whole."""
    for path in pid_dir.glob("*.env.json"):
        try:
            return dict(json.loads(path.read_text()))
        except ValueError:
            return None
    return None


async def test_up_starts_embedded_servers_hands_them_to_children_and_stops_them(
    start_up: StartUp, data_dir: Path
) -> None:
    port = free_port()
    children = [("core", "env", []), ("rest", "http", [str(port)]), ("ws", "sleep", [])]
    up = start_up(children, env={}, health_port=port, data_dir=data_dir)
    up.wait_up()
    summary = up.stdout()
    up.wait_for(lambda: _written_env(up.pid_dir) is not None, "the core child's environment file")
    env = _written_env(up.pid_dir)
    assert env is not None
    server_pids = [json.loads((data_dir / sub / "server.json").read_text())["pid"] for sub in ("postgres", "redis")]

    assert f"embedded; data in {data_dir / 'postgres'}" in summary
    assert env["PERSEUS_DATABASE_URL"] in summary and env["PERSEUS_REDIS_URL"] in summary
    conn = await asyncpg.connect(env["PERSEUS_DATABASE_URL"])
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    client = redis.Redis.from_url(env["PERSEUS_REDIS_URL"])
    try:
        assert client.ping()
    finally:
        client.close()

    up.proc.send_signal(signal.SIGINT)
    assert up.exit_code() == 0, up.stderr()
    assert still_alive(up.child_pids() + server_pids) == []
    assert processes_mentioning(str(data_dir)) == []


def test_up_stops_embedded_servers_when_migrate_fails(start_up: StartUp, data_dir: Path) -> None:
    port = free_port()
    fail = [sys.executable, "-c", "raise SystemExit(3)"]
    up = start_up([("rest", "http", [str(port)])], env={}, health_port=port, migrate=fail, data_dir=data_dir)

    assert up.exit_code() == 2
    assert "`perseus migrate` failed with exit code 3" in up.stderr()
    assert "embedded PostgreSQL data in" in up.stderr()
    assert processes_mentioning(str(data_dir)) == []
    assert not (data_dir / "redis" / "server.json").exists()


def test_up_stops_when_the_key_command_prints_no_key(start_up: StartUp, data_dir: Path) -> None:
    """The dev key is made in the embedded database only, so this runs on embedded servers."""
    port = free_port()
    up = start_up([("rest", "http", [str(port)])], env={}, health_port=port, create_key=SUCCEED, data_dir=data_dir)

    assert up.exit_code() == 2
    assert "printed no key" in up.stderr()
    assert up.child_pids() == []
    assert processes_mentioning(str(data_dir)) == []


def test_up_passes_given_urls_through_without_starting_servers(start_up: StartUp, data_dir: Path) -> None:
    given = {"PERSEUS_DATABASE_URL": "postgresql://x@127.0.0.1:1/x", "PERSEUS_REDIS_URL": "redis://127.0.0.1:1/0"}
    check = [
        sys.executable,
        "-c",
        "import os; raise SystemExit(0 if os.environ['PERSEUS_REDIS_URL'] == 'redis://127.0.0.1:1/0' else 9)",
    ]
    port = free_port()
    up = start_up([("rest", "http", [str(port)])], env=given, health_port=port, migrate=check, data_dir=data_dir)
    up.wait_up()
    up.proc.send_signal(signal.SIGTERM)

    assert up.exit_code() == 0, up.stderr()
    assert not (data_dir / "postgres").exists() and not (data_dir / "redis").exists()
