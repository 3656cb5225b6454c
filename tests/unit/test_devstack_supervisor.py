"""The ``perseus up`` supervisor with small fake children: real processes and signals, no databases.

``run_up`` runs in its own process (it installs signal handlers and is signalled like a user
would). The database and Redis URLs are set, so no embedded server starts here; the embedded
path is covered in ``tests/integration/test_devstack.py``. Every fake process writes its pid to
a directory, so a test can prove none of them outlived the supervisor.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.devstack.supervisor import _dev_key, _reachable, _redact, default_plan
from tests.support.devstack import (
    DEV_KEY,
    SUCCEED,
    StartUp,
    alive,
    fake,
    still_alive,
    up_starter,
)
from tests.support.processes import free_port


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[StartUp]:
    yield from up_starter(tmp_path)


def three_children(health_port: int, ws_mode: str = "sleep", *ws_args: str) -> list[tuple[str, str, list[str]]]:
    return [("core", "sleep", []), ("rest", "http", [str(health_port)]), ("ws", ws_mode, list(ws_args))]


# ---------------------------------------------------------------- stopping


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_stops_every_child_and_exits_0(start_up: StartUp, signum: int) -> None:
    port = free_port()
    up = start_up(three_children(port), health_port=port)
    up.wait_up()
    up.wait_for(lambda: len(up.child_pids()) == 3, "every child's pid file")  # health needs only one child
    pids = up.child_pids()
    assert all(alive(pid) for pid in pids)

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
    assert up.child_pids()  # however many had started when core failed (a race by nature)
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
