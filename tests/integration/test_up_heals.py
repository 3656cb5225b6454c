"""`perseus up` heals: SIGKILL each child of a real stack in turn, and its clients recover by themselves.

One real ``perseus up`` (embedded Redis and PostgreSQL, free ports for core, REST and WS) serves
the whole module; the tests run in order: core, rest, ws, embedded Redis, embedded PostgreSQL.
After each kill:

- the supervisor logs the death and the restart, and keeps running (today it stops everything
  on a dead core and never notices a dead Redis or PostgreSQL);
- REST ``/health`` answers 200 again, and so does a read with the printed dev key;
- a WebSocket client subscribed to ``prices:BTC-USD`` gets new events again, and over its whole
  life every event's seq is the one after the previous event's, or the one a ``resume_gap``
  announced: on an open connection, or after reconnecting with ``resume`` when its connection
  was cut. Nothing silent: no hole, no duplicate.

The embedded servers' restarts on their own (port taken meanwhile) are checked with fake children
at the end, where the supervisor must give up with a message naming the server.

The client is written here with ``websockets`` rather than the SDK's ``LiveStream``, so that what
the gateway sends is checked as it is: ``LiveStream`` drops duplicates and refills holes itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.support.devstack import GIVEN_URLS, StartUp, still_alive, up_starter
from tests.support.processes import Process, free_port, spawn, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("perseus_up")]

UP_TIMEOUT_S = 90.0
NOTICED_S = 10.0  # the supervisor polls every 0.1 s
RECOVERED_S = 60.0  # a restart (0.5 s backoff) plus the child's own start and reconnects
EVENTS_AFTER = 5  # new events a client must get after the REST gateway answers again
CHANNEL = "prices:BTC-USD"


@dataclass
class Stack:
    up: Process
    data_dir: Path
    rest: str
    ws: str
    key: str

    def log(self) -> str:
        return self.up.output()

    def pid_of(self, child: str) -> int:
        """The current pid of a child: a ``perseus`` command, or an embedded server (from its record)."""
        if child in ("redis", "postgres"):
            return int(json.loads((self.data_dir / child / "server.json").read_text())["pid"])
        for proc in psutil.Process(self.up.pid).children():
            if proc.cmdline()[-2:] == ["perseus_cli.cli", child]:
                return proc.pid
        raise AssertionError(f"no {child} child of perseus up")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """A data dir directly under the system temp dir: as root, PostgreSQL runs as ``nobody``, which
    must be able to traverse every parent (pytest's own tmp_path parents are private)."""
    data_dir = Path(tempfile.mkdtemp(prefix="perseus-up-heals-"))
    ports = {name: free_port() for name in ("core", "rest", "ws")}
    env = {
        "PERSEUS_CORE_ADDR": f"127.0.0.1:{ports['core']}",
        "PERSEUS_REST_ADDR": f"127.0.0.1:{ports['rest']}",
        "PERSEUS_WS_ADDR": f"127.0.0.1:{ports['ws']}",
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_SIM_BACKFILL_MINUTES": "0",  # history is not what this is about; start quickly
    }
    up = spawn(
        ["up", "--data-dir", str(data_dir)],
        env,
        env["PERSEUS_REST_ADDR"],
        unset=("PERSEUS_REDIS_URL", "PERSEUS_DATABASE_URL", "PERSEUS_REDIS_PREFIX"),
    )
    try:
        wait_until(lambda: "Ctrl-C to stop" in up.output(), up, "perseus up", timeout=UP_TIMEOUT_S)
        key = re.search(r"\bpk_int_\S+", up.output())  # the dev key: internal (issue 16)
        assert key is not None, up.output()
        yield Stack(up, data_dir, f"http://{env['PERSEUS_REST_ADDR']}", f"ws://{env['PERSEUS_WS_ADDR']}", key[0])
        assert up.stop(timeout=60) == 0, up.output()[-5000:]
    finally:
        up.close()
        shutil.rmtree(data_dir, ignore_errors=True)


# ---------------------------------------------------------------- a client that keeps every seq


@dataclass
class Watcher:
    """A WS client on ``prices:BTC-USD`` that reconnects with ``resume`` and records what it saw."""

    url: str
    key: str
    seqs: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # holes, duplicates, refusals
    seen: list[str] = field(default_factory=list)  # connections, closes, gaps: for the failure message
    _gap_to: int | None = None

    @property
    def last(self) -> int | None:
        return self.seqs[-1] if self.seqs else None

    async def run(self) -> None:
        while True:
            try:
                async with connect(
                    f"{self.url}/public/v1/stream", additional_headers={"X-API-Key": self.key}, open_timeout=5
                ) as ws:
                    resume = {CHANNEL: self.last} if self.last is not None else {}
                    await ws.send(json.dumps({"action": "subscribe", "channels": [CHANNEL], "resume": resume}))
                    self.seen.append(f"connected (resume {resume or '-'})")
                    async for frame in ws:
                        self._take(json.loads(frame))
                self.seen.append(f"closed {ws.close_code} {ws.close_reason!r}")
            except ConnectionClosed as exc:
                self.seen.append(f"cut {exc!r}")
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.seen.append(f"cannot connect {exc!r}")
            await asyncio.sleep(0.2)

    def _take(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        if kind == "price_update":
            seq = int(message["seq"])  # type: ignore[call-overload]
            if self.last is not None and seq != self.last + 1 and seq != self._gap_to:
                self.problems.append(f"seq {self.last} then {seq}")
            self.seqs.append(seq)
            self._gap_to = None
        elif kind == "resume_gap":
            self._gap_to = int(message["first_available_seq"])  # type: ignore[call-overload]
            self.seen.append(f"resume_gap {message}")
        elif kind == "error":
            self.problems.append(f"error {message}")

    def report(self) -> str:
        return f"seqs {self.seqs[:1]}..{self.seqs[-1:]} ({len(self.seqs)}); seen {self.seen}; problems {self.problems}"


@pytest.fixture
async def watcher(stack: Stack) -> AsyncIterator[Watcher]:
    client = Watcher(stack.ws, stack.key)
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], stack: Stack, what: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if stack.up.proc.poll() is not None:
            raise AssertionError(
                f"perseus up exited ({stack.up.proc.returncode}) before {what}:\n{stack.log()[-6000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {within_s:g} s:\n{stack.log()[-6000:]}")
        await asyncio.sleep(0.1)


async def rest_answers(stack: Stack) -> bool:
    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
        try:
            health = await client.get(f"{stack.rest}/health")
            read = await client.get(f"{stack.rest}/public/v1/exchanges", headers={"X-API-Key": stack.key})
        except httpx.HTTPError:
            return False
    return health.status_code == 200 and read.status_code == 200


async def rest_recovered(stack: Stack, what: str) -> None:
    deadline = time.monotonic() + RECOVERED_S
    while not await rest_answers(stack):
        if stack.up.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"REST did not answer 200 again after {what}:\n{stack.log()[-6000:]}")
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- the drills

CHILDREN = [
    ("core", "core"),
    ("rest", "rest"),
    ("ws", "ws"),
    ("redis", "embedded Redis"),
    ("postgres", "embedded PostgreSQL"),
]


@pytest.mark.parametrize(("child", "name"), CHILDREN, ids=[child for child, _ in CHILDREN])
async def test_a_killed_child_is_restarted_and_clients_recover(
    stack: Stack, watcher: Watcher, child: str, name: str
) -> None:
    await until(lambda: len(watcher.seqs) >= 3, stack, "events before the kill", RECOVERED_S)
    pid = stack.pid_of(child)
    restarts_before = stack.log().count(f"{name} restarted (pid")

    os.kill(pid, signal.SIGKILL)

    noticed = f"{name} exited with code -9; restarting in"
    await until(lambda: noticed in stack.log(), stack, f"the supervisor noticing {name}'s death", NOTICED_S)
    restarted = f"{name} restarted (pid"
    await until(lambda: stack.log().count(restarted) > restarts_before, stack, f"{name} restarted", RECOVERED_S)
    assert stack.pid_of(child) != pid
    await rest_recovered(stack, f"{name} was killed")
    enough = len(watcher.seqs) + EVENTS_AFTER
    await until(lambda: len(watcher.seqs) >= enough, stack, f"new events after {name} came back", RECOVERED_S)

    assert watcher.problems == [], watcher.report()
    assert stack.up.proc.poll() is None
    print(f"{name}: {watcher.report()}")


# ---------------------------------------------------------------- embedded servers, with fake children


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[StartUp]:
    yield from up_starter(tmp_path)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="perseus-up-heals-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_an_embedded_server_whose_port_was_taken_fails_its_restarts_and_stops_the_stack(
    start_up: StartUp, data_dir: Path
) -> None:
    """Its URL was handed out, so it must come back on the same port: a taken port is a failed restart."""
    port = free_port()
    fake_children = [("rest", "http", [str(port)]), ("ws", "sleep", [])]
    given_database = {"PERSEUS_DATABASE_URL": GIVEN_URLS["PERSEUS_DATABASE_URL"]}  # only Redis is embedded
    slow = {"first_delay_s": 1.0, "max_delay_s": 1.0, "window_s": 30.0}  # time to take the port first
    up = start_up(fake_children, env=given_database, health_port=port, data_dir=data_dir, restart=slow)
    up.wait_up()
    record = json.loads((data_dir / "redis" / "server.json").read_text())
    children = up.child_pids()

    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(record["pid"], signal.SIGKILL)
        up.wait_for(lambda: _bound(squatter, record["port"]), "the dead Redis's port")  # another program takes it
        squatter.listen()

        assert up.exit_code(timeout=30) == 1
    stderr = up.stderr()
    assert "embedded Redis exited with code -9; restarting in" in stderr
    assert f"embedded Redis did not come back (embedded Redis: port {record['port']} is taken" in stderr
    assert "embedded Redis failed 5 times within 30 s" in stderr and "giving up and stopping everything" in stderr
    assert still_alive(children) == []


def _bound(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True
