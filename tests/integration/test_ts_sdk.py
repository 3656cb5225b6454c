"""The TypeScript SDK's own test suite (``npm test`` in clients/typescript) against a real stack.

The stack is what ``make run`` gives a user: a core in exchange mode (the
``sim`` venue running), the REST and WebSocket gateways, and an admin key
(ingest, which the TS tests publish through, needs a privileged key). Five
alerts are seeded so the alert pages are really followed. The WebSocket
gateway runs under a small supervisor that starts it again on the same port
whenever it exits, as ``perseus up`` does, so ``PERSEUS_WS_RESTART_CMD`` is
just a ``kill`` of its current pid. The suite must pass with no test skipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.market_seed import Seed, seed_market
from tests.support.processes import (
    GATEWAY_TEST_ENV,
    Process,
    answers_http,
    free_port,
    run_cli,
    running_core,
    running_gateway,
    spawn,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.timeout(600),  # npm ci, tsc and the suite, on a busy machine
]

TS_DIR = Path(__file__).resolve().parents[2] / "clients" / "typescript"
NPM_TIMEOUT_S = 300
SUITE_TIMEOUT_S = 420  # within the test's own 600 s


class SupervisedWs:
    """``perseus ws`` on a fixed address, started again whenever it exits, its pid in ``pidfile``."""

    def __init__(self, env: dict[str, str], core_addr: str, pidfile: Path) -> None:
        self.addr = f"127.0.0.1:{free_port()}"
        # uncapped per address, as every test gateway: the suite's reconnects all come from 127.0.0.1
        self.env = {**GATEWAY_TEST_ENV["ws"], **env, "PERSEUS_CORE_ADDR": core_addr, "PERSEUS_WS_ADDR": self.addr}
        self.pidfile = pidfile
        self.starts = 0
        self._process: Process | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> SupervisedWs:
        self._start()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)
        if self._process is not None:
            self._process.close()

    def _start(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            process = spawn(["ws"], self.env, self.addr)
            while process.proc.poll() is None and not answers_http(self.addr):
                time.sleep(0.05)
            if process.proc.poll() is None:
                break
            process.close()  # the port may still be held by the previous one for a moment
            if time.monotonic() > deadline:
                raise RuntimeError(f"perseus ws did not start again:\n{process.output()[-3000:]}")
            time.sleep(0.2)
        self._process = process
        self.starts += 1
        self.pidfile.write_text(str(process.pid))

    def _watch(self) -> None:
        while not self._stopping.wait(0.1):
            assert self._process is not None
            if self._process.proc.poll() is not None:
                self._process.log.close()
                self._start()


def npm(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npm", *args],
        cwd=TS_DIR,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def installed() -> None:
    """``npm ci`` when node_modules is missing or older than the lockfile (CI runs it before the suite)."""
    marker = TS_DIR / "node_modules" / ".package-lock.json"
    lock = TS_DIR / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        result = npm(["ci", "--no-audit", "--no-fund"])
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack(migrated_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = dict(migrated_env)
    asyncio.run(seed_market(env["PERSEUS_DATABASE_URL"], env["PERSEUS_REDIS_URL"], env["PERSEUS_REDIS_PREFIX"], Seed()))
    created = run_cli(["keys", "create", "--tier", "admin", "--name", "ts-sdk"], env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    pidfile = tmp_path_factory.mktemp("ts_sdk") / "ws.pid"
    with (
        running_core(env) as core,
        running_gateway("rest", env, core.addr) as rest,
        SupervisedWs(env, core.addr, pidfile) as ws,
    ):
        yield {
            "PERSEUS_REST_URL": f"http://{rest.addr}",
            "PERSEUS_WS_URL": f"ws://{ws.addr}",
            "PERSEUS_API_KEY": key,
            "PERSEUS_WS_RESTART_CMD": f'kill -TERM "$(cat {pidfile})"',
        }
        assert ws.starts >= 2, "the restart test did not restart the gateway"


def test_npm_test_passes_against_a_running_stack(installed: None, stack: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "npm-test.log"
    with log.open("w") as out:  # a file, not a pipe: what a hung run printed can still be shown
        try:
            code = subprocess.run(
                ["npm", "test"],
                cwd=TS_DIR,
                env={**os.environ, **stack},
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=SUITE_TIMEOUT_S,
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    output = log.read_text(errors="replace")
    assert code is not None, f"npm test still running after {SUITE_TIMEOUT_S} s:\n{output[-20000:]}"
    assert code == 0, failures(output)
    assert "# fail 0" in output and "# skipped 0" in output, output[-5000:]
    assert "# pass 0\n" not in output


def failures(output: str) -> str:
    """The failed tests' reports (TAP ``not ok`` blocks), and the summary."""
    lines = output.splitlines()
    blocks = [i for i, line in enumerate(lines) if line.lstrip().startswith("not ok")]
    shown = ["\n".join(lines[max(0, i - 2) : i + 40]) for i in blocks]
    return "\n...\n".join([*shown, *lines[-12:]]) if shown else output[-20000:]
