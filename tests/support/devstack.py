"""Helpers for testing ``perseus up``: fake children, and ``run_up`` in its own process.

``up_starter`` runs ``run_up`` with a plan of fake children (``python -c FAKE_CHILD ...``) in a
separate process, so it installs its signal handlers and is signalled like a user would. Every
fake process writes its pid to a directory, so a test can prove none of them outlived the
supervisor. Used by ``tests/unit/test_devstack_supervisor.py`` and
``tests/integration/test_devstack.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port

# A fake child: ``python -c FAKE_CHILD <mode> <pid_dir> [arg]``.
#   sleep        run until signalled
#   http PORT    serve 200 on /health until signalled
#   exit:N [S]   exit with code N after S seconds
#   ignore-term  run, ignoring SIGTERM
#   env          like sleep, after writing its PERSEUS_* and OTEL_* environment to <pid>.env.json
FAKE_CHILD = r"""
import http.server, json, os, signal, sys, time
mode, pid_dir = sys.argv[1], sys.argv[2]
with open(os.path.join(pid_dir, f"{os.getpid()}.pid"), "w") as f:
    f.write(mode)
if mode == "env":
    env = {k: v for k, v in os.environ.items() if k.startswith(("PERSEUS_", "OTEL_"))}
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
from perseus_cli.devstack.supervisor import Child, RestartPolicy, UpPlan, run_up
from core.settings import StartupError
cfg = json.loads(sys.argv[1])
plan = UpPlan(
    children=tuple(Child(name, tuple(argv), f"fake {name}") for name, argv in cfg["children"]),
    migrate=tuple(cfg["migrate"]),
    create_key=tuple(cfg["create_key"]),
    health_url=cfg["health_url"],
    ready_timeout_s=cfg["ready_timeout_s"],
    grace_s=cfg["grace_s"],
    restart=RestartPolicy(**cfg["restart"]),
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
# Restarts ten times quicker than ``perseus up``'s defaults, so a test sees a child give up in about a second.
QUICK_RESTARTS: Mapping[str, float] = {"first_delay_s": 0.05, "max_delay_s": 1.0, "window_s": 20.0}


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

    def live_pids(self) -> list[int]:
        return [pid for pid in self.child_pids() if alive(pid)]

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
        restart: Mapping[str, float] = QUICK_RESTARTS,
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
            "restart": dict(restart),
            "data_dir": str(data_dir or run_dir / "data"),
        }
        unset = ("PERSEUS_DATABASE_URL", "PERSEUS_REDIS_URL", "PERSEUS_SERVICE_TOKEN")
        base = {k: v for k, v in os.environ.items() if k not in unset}
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
