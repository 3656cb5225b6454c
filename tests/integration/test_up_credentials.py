"""``perseus up`` is not wide open (issue 16): its stores ask for passwords, the CLI finds them, its dev key rotates.

One real ``perseus up`` serves the module, started the way the README says: in a directory of its own, with no
``--data-dir`` (so its state is ``./.perseus``) and no store URL. The tests check, in order:

- the embedded PostgreSQL refuses a TCP connection without a password and takes the one in ``.perseus/``
  (0600 files, a ``pg_hba.conf`` without ``trust``);
- the embedded Valkey answers ``NOAUTH`` without the password and serves with it;
- every process it started got the same ``PERSEUS_SERVICE_TOKEN`` (the one printed) and the user's ``OTEL_*``;
- ``perseus keys create --tier free``, run beside it with no ``PERSEUS_*`` variable at all, succeeds, and the key
  it prints reads through the REST gateway;
- a restart of ``perseus up`` in the same directory (which then serves the module) rotates its ``internal``
  dev key: the old one gets ``401``, the new one reads, and exactly one active key carries the dev key's name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg
import httpx
import psutil
import pytest
import redis

from perseus_cli.devstack.supervisor import DEV_KEY_NAME
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("perseus_up"), pytest.mark.timeout(300)]

UP_TIMEOUT_S = 90.0
OTEL_MARK = "perseus.test=up-credentials"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without a single ``PERSEUS_*`` variable (what a developer's shell has)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}, **extra}


@dataclass
class Up:
    """A running ``perseus up`` in ``workdir`` (state in ``workdir/.perseus``) and what it printed."""

    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    workdir: Path
    rest: str

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def row(self, name: str) -> str:
        match = re.search(rf"^  {re.escape(name)}  +(\S+)", self.output(), re.MULTILINE)
        assert match, self.output()[-3000:]
        return match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                assert self.proc.wait(60) == 0, self.output()[-3000:]
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
        self.log.close()


def start_up(workdir: Path) -> Up:
    """``perseus up`` in ``workdir`` with only listen addresses set; returns once its summary is out."""
    ports = {name: free_port() for name in ("core", "rest", "ws")}
    env = clean_env(
        PERSEUS_CORE_ADDR=f"127.0.0.1:{ports['core']}",
        PERSEUS_REST_ADDR=f"127.0.0.1:{ports['rest']}",
        PERSEUS_WS_ADDR=f"127.0.0.1:{ports['ws']}",
        PERSEUS_CORE_METRICS_ADDR="",
        PERSEUS_SIM_BACKFILL_MINUTES="0",
        PERSEUS_SIM_SYMBOLS="BTC-USD",
        OTEL_RESOURCE_ATTRIBUTES=OTEL_MARK,
    )
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "perseus_cli.cli", "up"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    up = Up(proc, log, workdir, f"http://127.0.0.1:{ports['rest']}")
    deadline = UP_TIMEOUT_S
    try:
        while "Ctrl-C to stop" not in up.output():
            if proc.poll() is not None or deadline <= 0:
                raise AssertionError(f"perseus up did not come up:\n{up.output()[-5000:]}")
            try:
                proc.wait(0.2)
            except subprocess.TimeoutExpired:
                deadline -= 0.2
    except BaseException:
        up.stop()
        raise
    return up


def perseus(args: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """``perseus <args>`` in ``workdir`` with no ``PERSEUS_*`` variable set."""
    return subprocess.run(
        [sys.executable, "-m", "perseus_cli.cli", *args],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def status_with(up: Up, key: str) -> int:
    return httpx.get(f"{up.rest}/public/v1/exchanges", headers={"X-API-Key": key}, timeout=5).status_code


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Directly under the system temp dir and searchable: as root, PostgreSQL runs as ``nobody``, which must
    traverse every parent of ``.perseus``."""
    path = Path(tempfile.mkdtemp(prefix="perseus-up-credentials-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def up(workdir: Path) -> Iterator[Up]:
    started = start_up(workdir)
    try:
        yield started
    finally:
        started.stop()


def recorded_url(workdir: Path, store: str) -> str:
    return str(json.loads((workdir / ".perseus" / store / "server.json").read_text())["url"])


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_the_embedded_postgres_needs_its_password_over_tcp(up: Up) -> None:
    url = recorded_url(up.workdir, "postgres")
    state = up.workdir / ".perseus" / "postgres"
    password = (state / "password").read_text().strip()
    assert f":{password}@" in url and url in up.output()  # the summary prints what a client needs
    assert private(state / "password") and private(state / "server.json")
    hba = (state / "pgdata" / "pg_hba.conf").read_text()
    assert "trust" not in hba and "scram-sha-256" in hba
    port = url.rsplit(":", 1)[1].split("/")[0]

    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=5)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://postgres:not-it@127.0.0.1:{port}/postgres", timeout=5)
    conn = await asyncpg.connect(url, timeout=5)
    try:
        assert await conn.fetchval("SHOW password_encryption") == "scram-sha-256"
        stored = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
        assert stored.startswith("SCRAM-SHA-256$")
    finally:
        await conn.close()


def test_the_embedded_valkey_needs_its_password(up: Up) -> None:
    url = recorded_url(up.workdir, "redis")
    state = up.workdir / ".perseus" / "redis"
    password = (state / "password").read_text().strip()
    assert url.startswith(f"redis://:{password}@127.0.0.1:") and url in up.output()
    assert private(state / "password") and private(state / "valkey.conf")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    server = psutil.Process(json.loads((state / "server.json").read_text())["pid"])
    assert password not in " ".join(server.cmdline())  # from the 0600 config file, not argv

    with socket.create_connection(("127.0.0.1", port), timeout=5) as anonymous:  # a client that sends no AUTH
        anonymous.sendall(b"GET anything\r\n")
        assert anonymous.recv(200).startswith(b"-NOAUTH ")
        anonymous.sendall(b"AUTH not-it\r\n")
        assert anonymous.recv(200).startswith(b"-WRONGPASS ")
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        assert client.ping()
    finally:
        client.close()


def test_every_process_gets_the_service_token_and_the_users_otel_settings(up: Up) -> None:
    token = up.row("service token")
    assert len(token) >= 40
    children = [p for p in psutil.Process(up.proc.pid).children() if "perseus_cli.cli" in " ".join(p.cmdline())]
    commands = sorted(p.cmdline()[-1] for p in children)
    assert commands == ["core", "rest", "ws"], commands
    for child in children:
        environ = child.environ()
        assert environ.get("PERSEUS_SERVICE_TOKEN") == token, child.cmdline()
        assert environ.get("OTEL_RESOURCE_ATTRIBUTES") == OTEL_MARK, child.cmdline()


def test_keys_create_beside_up_needs_no_variable(up: Up) -> None:
    result = perseus(["keys", "create", "--tier", "free", "--name", "beside up"], up.workdir)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("pk_free_")
    assert status_with(up, key) == 200
    assert status_with(up, key[:-1] + ("A" if key[-1] != "A" else "B")) == 401

    listed = perseus(["keys", "list", "--json"], up.workdir)
    assert listed.returncode == 0, listed.stderr
    assert {(k["name"], k["tier"]) for k in json.loads(listed.stdout)} >= {("beside up", "free")}


def test_without_a_running_up_keys_says_what_to_do(tmp_path: Path) -> None:
    result = perseus(["keys", "list"], tmp_path)
    assert result.returncode == 2
    assert "PERSEUS_DATABASE_URL" in result.stderr and "perseus up" in result.stderr, result.stderr


def test_a_restart_rotates_the_internal_dev_key(up: Up) -> None:
    """Stops the module's stack and starts another in the same directory, which then serves the module."""
    old = up.row("dev API key")
    assert old.startswith("pk_int_")
    assert status_with(up, old) == 200
    old_token = up.row("service token")
    up.stop()

    again = start_up(up.workdir)
    up.proc, up.log, up.rest = again.proc, again.log, again.rest  # the fixture stops this one
    new = up.row("dev API key")
    assert new.startswith("pk_int_") and new != old
    assert up.row("service token") != old_token  # a token per start
    assert status_with(up, old) == 401
    assert status_with(up, new) == 200
    listed = perseus(["keys", "list", "--json"], up.workdir)
    assert listed.returncode == 0, listed.stderr
    dev = [(k["tier"], k["revoked"] is None) for k in json.loads(listed.stdout) if k["name"] == DEV_KEY_NAME]
    assert dev == [("internal", False), ("internal", True)]  # by id: the old one revoked, the new one active
