"""The ``perseus up`` supervisor with small fake children: real processes and signals, no databases.

``run_up`` runs in its own process (it installs signal handlers and is signalled like a user
would). The database and Redis URLs are set, so no embedded server starts here; the embedded
path is covered in ``tests/integration/test_devstack.py``. Every fake process writes its pid to
a directory, so a test can prove none of them outlived the supervisor.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.devstack.supervisor import _dev_key, _reachable, _redact, default_plan

# A fake child: ``python -c FAKE_CHILD <mode> <pid_dir> [arg]``.
#   sleep        run until signalled
#   http PORT    serve 200 on /health until signalled
#   exit:N [S]   exit with code N after S seconds
#   ignore-term  run, ignoring SIGTERM
#   env          like sleep, after writing its PERSEUS_* environment to <pid>.env.json
FAKE_CHILD = r"""
import http.server, json, os, signal, sys, time
mode, pid_dir = sys.argv[1], sys.argv[2]
with open(os.path.join(pid_dir, f"{os.getpid()}.pid"), "w") as f:
    f.write(mode)
if mode == "env":
    env = {k: v for k, v in os.environ.items() if k.startswith("PERSEUS_")}
    with open(os.path.join(pid_dir, f"{os.getpid()}.env.json"), "w") as f:
        json.dump(env, f)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode.startswith("exit:"):
    time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)
    sys.exit(int(mode[5:]))
if mode == "http":
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[3])), Health).serve_forever()
time.sleep(600)
"""

# ``run_up`` with a plan from JSON, mapping StartupError to exit 2 the way ``perseus`` does.
HARNESS = r"""
import json, os, sys
from core.devstack.supervisor import Child, UpPlan, run_up
from core.settings import StartupError
cfg = json.loads(sys.argv[1])
plan = UpPlan(
    children=tuple(Child(name, tuple(argv), f"fake {name}") for name, argv in cfg["children"]),
    migrate=tuple(cfg["migrate"]),
    create_key=tuple(cfg["create_key"]),
    health_url=cfg["health_url"],
    ready_timeout_s=cfg["ready_timeout_s"],
    grace_s=cfg["grace_s"],
)
try:
    code = run_up(dict(os.environ), data_dir=cfg["data_dir"], plan=plan)
except StartupError as exc:
    print(f"perseus up: {exc}", file=sys.stderr)
    code = 2
sys.exit(code)
"""

GIVEN_URLS = {
    "PERSEUS_DATABASE_URL": "postgresql://perseus:s3cret-pw@127.0.0.1:1/perseus",
    "PERSEUS_REDIS_URL": "redis://127.0.0.1:1/0",
}
DEV_KEY = "pk_dev_0123456789"
PRINT_KEY = [sys.executable, "-c", f"print('creating key'); print(); print({DEV_KEY!r}); print()"]
SUCCEED = [sys.executable, "-c", "pass"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    """Running and not a zombie (orphans may stay zombies where pid 1 does not reap them)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def still_alive(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@dataclass
class UpProcess:
    """A running ``run_up`` and the evidence it leaves: output files and the fakes' pid files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    pid_dir: Path

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def child_pids(self) -> list[int]:
        return sorted(int(p.stem) for p in self.pid_dir.glob("*.pid"))

    def child_pid(self, mode: str) -> int:
        return next(int(p.stem) for p in self.pid_dir.glob("*.pid") if p.read_text() == mode)

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited ({self.proc.returncode}) before {what}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s:\n{self.stderr()}")
            time.sleep(0.05)

    def wait_up(self) -> None:
        self.wait_for(lambda: "Ctrl-C to stop" in self.stdout(), "summary")

    def exit_code(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)


StartUp = Callable[..., UpProcess]


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[StartUp]:
    yield from up_starter(tmp_path)


def up_starter(tmp_path: Path) -> Iterator[StartUp]:
    """Yields a function that starts ``run_up`` with fake children; kills whatever is left after."""
    started: list[UpProcess] = []

    def start(
        children: list[tuple[str, str, list[str]]],
        *,
        env: Mapping[str, str] = GIVEN_URLS,
        migrate: list[str] = SUCCEED,
        create_key: list[str] = PRINT_KEY,
        health_port: int | None = None,
        ready_timeout_s: float = 10.0,
        grace_s: float = 5.0,
        data_dir: Path | None = None,
    ) -> UpProcess:
        run_dir = tmp_path / f"run{len(started)}"
        pid_dir = run_dir / "pids"
        pid_dir.mkdir(parents=True)
        cfg = {
            "children": [(name, fake(mode, pid_dir, *args)) for name, mode, args in children],
            "migrate": migrate,
            "create_key": create_key,
            "health_url": f"http://127.0.0.1:{health_port or free_port()}/health",
            "ready_timeout_s": ready_timeout_s,
            "grace_s": grace_s,
            "data_dir": str(data_dir or run_dir / "data"),
        }
        base = {k: v for k, v in os.environ.items() if k not in ("PERSEUS_DATABASE_URL", "PERSEUS_REDIS_URL")}
        out, err = run_dir / "stdout", run_dir / "stderr"
        with out.open("wb") as out_file, err.open("wb") as err_file:
            proc = subprocess.Popen(
                [sys.executable, "-c", HARNESS, json.dumps(cfg)],
                env={**base, **env},
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=err_file,
            )
        up = UpProcess(proc, out, err, pid_dir)
        started.append(up)
        return up

    yield start
    for up in started:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()
        for pid in up.child_pids():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def fake(mode: str, pid_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", FAKE_CHILD, mode, str(pid_dir), *args]


def three_children(health_port: int, ws_mode: str = "sleep", *ws_args: str) -> list[tuple[str, str, list[str]]]:
    return [("core", "sleep", []), ("rest", "http", [str(health_port)]), ("ws", ws_mode, list(ws_args))]


# ---------------------------------------------------------------- stopping


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_stops_every_child_and_exits_0(start_up: StartUp, signum: int) -> None:
    port = free_port()
    up = start_up(three_children(port), health_port=port)
    up.wait_up()
    pids = up.child_pids()
    assert len(pids) == 3 and all(alive(pid) for pid in pids)

    up.proc.send_signal(signum)

    assert up.exit_code() == 0, up.stderr()
    assert still_alive(pids) == []


def test_the_summary_shows_the_dev_key_and_the_children_but_no_password(start_up: StartUp) -> None:
    port = free_port()
    up = start_up(three_children(port), health_port=port)
    up.wait_up()
    summary = up.stdout()
    up.proc.send_signal(signal.SIGTERM)
    assert up.exit_code() == 0

    assert DEV_KEY in summary and "creating key" not in summary
    assert all(f"fake {name}" in summary for name in ("core", "rest", "ws"))
    assert "postgresql://perseus:***@127.0.0.1:1/perseus" in summary
    assert "s3cret-pw" not in summary + up.stderr()


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(start_up: StartUp) -> None:
    port = free_port()
    up = start_up(three_children(port, "ignore-term"), health_port=port, grace_s=0.5)
    up.wait_up()
    pids = up.child_pids()

    started = time.monotonic()
    up.proc.send_signal(signal.SIGTERM)
    assert up.exit_code() == 0
    assert time.monotonic() - started < 5
    assert still_alive(pids) == []


def test_children_die_with_a_sigkilled_supervisor(start_up: StartUp) -> None:
    port = free_port()
    up = start_up(three_children(port), health_port=port)
    up.wait_up()
    pids = up.child_pids()

    up.proc.kill()
    up.proc.wait()

    assert still_alive(pids) == []


# ---------------------------------------------------------------- failures


def test_a_child_that_exits_stops_the_others_and_exits_nonzero(start_up: StartUp) -> None:
    port = free_port()
    up = start_up(three_children(port, "exit:3", "1.0"), health_port=port)
    up.wait_up()
    pids = up.child_pids()

    assert up.exit_code() == 1
    assert "ws exited unexpectedly with code 3" in up.stderr()
    assert still_alive(pids) == []


def test_a_child_failing_at_startup_stops_everything_with_one_line(start_up: StartUp) -> None:
    children = [("core", "exit:2", []), ("rest", "sleep", []), ("ws", "sleep", [])]
    up = start_up(children)

    assert up.exit_code() == 2
    assert "perseus up: core exited with code 2 during startup" in up.stderr()
    assert "Ctrl-C to stop" not in up.stdout()
    assert len(up.child_pids()) == 3
    assert still_alive(up.child_pids()) == []


def test_health_that_never_answers_200_stops_everything(start_up: StartUp) -> None:
    children = [("core", "sleep", []), ("rest", "sleep", []), ("ws", "sleep", [])]
    up = start_up(children, ready_timeout_s=1.0)

    assert up.exit_code() == 2
    assert "did not answer 200 within 1 s" in up.stderr()
    assert still_alive(up.child_pids()) == []


def test_a_failing_migrate_stops_before_any_child_starts(start_up: StartUp) -> None:
    port = free_port()
    up = start_up(three_children(port), health_port=port, migrate=[sys.executable, "-c", "raise SystemExit(4)"])

    assert up.exit_code() == 2
    assert "perseus up: `perseus migrate` failed with exit code 4" in up.stderr()
    assert up.child_pids() == []


def test_a_key_command_printing_nothing_is_an_error(start_up: StartUp) -> None:
    port = free_port()
    up = start_up(three_children(port), health_port=port, create_key=SUCCEED)

    assert up.exit_code() == 2
    assert "printed no key" in up.stderr()
    assert up.child_pids() == []


def test_a_stop_signal_during_a_setup_step_stops_the_step_and_exits_0(start_up: StartUp, tmp_path: Path) -> None:
    port = free_port()
    step_pids = tmp_path / "step-pids"
    step_pids.mkdir()
    up = start_up(three_children(port), health_port=port, migrate=fake("sleep", step_pids))
    up.wait_for(lambda: any(step_pids.glob("*.pid")), "migrate step")
    step_pid = int(next(step_pids.glob("*.pid")).stem)

    up.proc.send_signal(signal.SIGINT)

    assert up.exit_code() == 0, up.stderr()
    assert still_alive([step_pid]) == []
    assert up.child_pids() == []


# ---------------------------------------------------------------- pure helpers


def test_default_plan_runs_the_perseus_commands_with_this_python() -> None:
    plan = default_plan({})
    cli = (sys.executable, "-m", "core.cli")
    assert [(c.name, c.argv) for c in plan.children] == [
        ("core", (*cli, "core")),
        ("rest", (*cli, "rest")),
        ("ws", (*cli, "ws")),
    ]
    assert plan.migrate == (*cli, "migrate")
    assert plan.create_key == (*cli, "keys", "create", "--tier", "admin", "--name", "dev")
    assert plan.health_url == "http://127.0.0.1:8000/health"


def test_default_plan_follows_the_listen_addresses() -> None:
    plan = default_plan({"PERSEUS_REST_ADDR": "0.0.0.0:9000", "PERSEUS_WS_ADDR": "127.0.0.1:9001"})
    assert plan.health_url == "http://127.0.0.1:9000/health"
    assert "ws://127.0.0.1:9001/public/v1/stream" in plan.children[2].listen


def test_helpers() -> None:
    assert _dev_key("Created key abc\n\npk_live_1\n\n") == "pk_live_1"
    assert _reachable("[::]:8000") == "[::1]:8000"
    assert _redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert _redact("redis://h:1/0") == "redis://h:1/0"
