"""The ``perseus up`` supervisor with small fake children: real processes and signals, no databases.

``run_up`` runs in its own process (it installs signal handlers and is signalled like a user
would), with restarts ten times quicker than the defaults (``QUICK_RESTARTS``); the rules
themselves (backoff, reset, giving up) are checked on :class:`RestartBudget` with a fake clock.
The database and Redis URLs are set, so no embedded server starts here; the embedded path is
covered in ``tests/integration/test_devstack.py`` and ``tests/integration/test_up_heals.py``.
Every fake process writes its pid to a directory, so a test can prove none of them outlived the
supervisor.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from perseus_cli.devstack.restarts import RestartBudget, RestartPolicy
from perseus_cli.devstack.supervisor import DEV_KEY_NAME, _dev_key, _reachable, _redact, default_plan
from tests.support.devstack import (
    DEV_KEY,
    GIVEN_URLS,
    QUICK_RESTARTS,
    StartUp,
    UpProcess,
    alive,
    fake,
    still_alive,
    up_starter,
)
from tests.support.processes import free_port


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[StartUp]:
    yield from up_starter(tmp_path)


def signal_kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def _health_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


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


def test_the_summary_shows_the_children_and_how_to_make_a_key_but_no_password(start_up: StartUp) -> None:
    """The database is given (``GIVEN_URLS``): it is the user's, so no dev key is made in it (the key command,
    here one that would fail, never runs) and the summary says how to make one."""
    port = free_port()
    never = [sys.executable, "-c", "raise SystemExit(7)"]
    up = start_up(three_children(port), health_port=port, create_key=never)
    up.wait_up()
    summary = up.stdout()
    up.proc.send_signal(signal.SIGTERM)
    assert up.exit_code() == 0

    assert DEV_KEY not in summary and "`perseus keys create --tier internal`" in summary
    assert all(f"fake {name}" in summary for name in ("core", "rest", "ws"))
    assert "postgresql://perseus:***@127.0.0.1:1/perseus" in summary
    assert "s3cret-pw" not in summary + up.stderr()


def _child_envs(up: UpProcess, count: int) -> list[dict[str, str]]:
    up.wait_for(lambda: len(list(up.pid_dir.glob("*.env.json"))) == count, "every env child's environment")
    return [json.loads(path.read_text()) for path in sorted(up.pid_dir.glob("*.env.json"))]


def test_every_child_gets_a_service_token_made_for_the_run_and_the_users_otel_settings(
    start_up: StartUp,
) -> None:
    tokens = []
    for _ in range(2):
        port = free_port()
        children: list[tuple[str, str, list[str]]] = [
            ("core", "env", []),
            ("rest", "http", [str(port)]),
            ("ws", "env", []),
        ]
        env = {**GIVEN_URLS, "OTEL_SERVICE_NAME": "mine", "PERSEUS_SERVICE_TOKEN": ""}
        up = start_up(children, env=env, health_port=port)
        up.wait_up()
        core, ws = _child_envs(up, 2)
        assert core["PERSEUS_SERVICE_TOKEN"] == ws["PERSEUS_SERVICE_TOKEN"]
        assert core["OTEL_SERVICE_NAME"] == ws["OTEL_SERVICE_NAME"] == "mine"
        assert len(core["PERSEUS_SERVICE_TOKEN"]) >= 40 and core["PERSEUS_SERVICE_TOKEN"] in up.stdout()
        tokens.append(core["PERSEUS_SERVICE_TOKEN"])
        up.proc.send_signal(signal.SIGTERM)
        assert up.exit_code() == 0
    assert tokens[0] != tokens[1]  # one per start


def test_a_service_token_the_user_set_is_the_one_every_child_gets(start_up: StartUp) -> None:
    port = free_port()
    children: list[tuple[str, str, list[str]]] = [("core", "env", []), ("rest", "http", [str(port)]), ("ws", "env", [])]
    up = start_up(children, env={**GIVEN_URLS, "PERSEUS_SERVICE_TOKEN": "users-own-token"}, health_port=port)
    up.wait_up()
    assert [env["PERSEUS_SERVICE_TOKEN"] for env in _child_envs(up, 2)] == ["users-own-token"] * 2
    assert "users-own-token" not in up.stdout()  # the summary only says where it came from
    up.proc.send_signal(signal.SIGTERM)
    assert up.exit_code() == 0


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


RESTART_LINE = re.compile(r"(\w+) exited with code (-?\d+); restarting in ([\d.e-]+) s \(restart (\d+)\)")


def restarts(stderr: str) -> list[tuple[str, int, float, int]]:
    """(child, exit code, delay, restart number) of every restart the supervisor logged."""
    return [(name, int(code), float(delay), int(n)) for name, code, delay, n in RESTART_LINE.findall(stderr)]


def test_a_killed_child_is_restarted_with_its_environment_and_the_others_keep_running(start_up: StartUp) -> None:
    port = free_port()
    up = start_up(three_children(port, "env"), health_port=port)
    up.wait_up()
    up.wait_for(lambda: len(up.child_pids()) == 3, "every child's pid file")
    ws = up.child_pid("env")
    others = [pid for pid in up.child_pids() if pid != ws]
    env_before = json.loads((up.pid_dir / f"{ws}.env.json").read_text())

    signal_kill(ws)

    up.wait_for(lambda: len(up.live_pids()) == 3 and ws not in up.live_pids(), "a new ws")
    assert [(name, code, n) for name, code, _, n in restarts(up.stderr())] == [("ws", -9, 1)]
    new_ws = next(pid for pid in up.live_pids() if pid not in others)
    up.wait_for(lambda: (up.pid_dir / f"{new_ws}.env.json").exists(), "the new ws's environment")
    assert json.loads((up.pid_dir / f"{new_ws}.env.json").read_text()) == env_before
    assert all(alive(pid) for pid in others)  # core and rest were not touched
    assert up.proc.poll() is None

    up.proc.send_signal(signal.SIGTERM)
    assert up.exit_code() == 0, up.stderr()
    assert still_alive(up.child_pids()) == []


def test_a_child_that_keeps_exiting_is_restarted_with_a_growing_backoff(start_up: StartUp) -> None:
    port = free_port()
    policy = {"first_delay_s": 0.2, "max_delay_s": 0.8, "jitter": 0.25, "max_failures": 6, "window_s": 30.0}
    up = start_up(three_children(port, "exit:3", "0.3"), health_port=port, restart=policy)
    up.wait_up()

    up.wait_for(lambda: len(restarts(up.stderr())) >= 4, "four restarts", timeout=30)
    logged = restarts(up.stderr())[:4]
    assert [(name, code, n) for name, code, _, n in logged] == [("ws", 3, n) for n in (1, 2, 3, 4)]
    delays = [delay for _, _, delay, _ in logged]
    for delay, ceiling in zip(delays, (0.2, 0.4, 0.8, 0.8), strict=True):  # doubling, capped, jittered down
        assert 0.75 * ceiling - 0.01 <= delay <= ceiling + 0.01, delays
    assert up.proc.poll() is None


def test_a_child_that_fails_too_often_stops_everything_with_its_name_and_code(start_up: StartUp) -> None:
    port = free_port()
    up = start_up(three_children(port, "exit:3", "0.5"), health_port=port)
    up.wait_up()

    assert up.exit_code(timeout=30) == 1
    stderr = up.stderr()
    assert len(restarts(stderr)) == 4  # the fifth failure within the window is the last
    window = QUICK_RESTARTS["window_s"]
    assert f"ws failed 5 times within {window:g} s; last: exited with code 3 (its output is above)" in stderr
    assert "giving up and stopping everything" in stderr
    assert still_alive(up.child_pids()) == []  # core and rest were stopped too


def test_children_killed_together_are_each_restarted(start_up: StartUp) -> None:
    port = free_port()
    up = start_up(three_children(port), health_port=port)
    up.wait_up()
    up.wait_for(lambda: len(up.child_pids()) == 3, "every child's pid file")
    first = up.child_pids()

    for pid in first:
        signal_kill(pid)

    up.wait_for(lambda: len(up.live_pids()) == 3 and not set(first) & set(up.live_pids()), "three new children")
    assert sorted(name for name, *_ in restarts(up.stderr())) == ["core", "rest", "ws"]
    up.wait_for(lambda: _health_ok(port), "health from the new rest")
    up.proc.send_signal(signal.SIGINT)
    assert up.exit_code() == 0


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


# ---------------------------------------------------------------- restart rules (fake clock)


def test_the_default_backoff_doubles_from_half_a_second_to_ten() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_jitter_shortens_a_delay_by_at_most_a_quarter() -> None:
    assert RestartBudget(RestartPolicy(), rand=lambda: 0.0).failed(0.0) == 0.5
    assert RestartBudget(RestartPolicy(), rand=lambda: 0.999999).failed(0.0) == pytest.approx(0.375)


def test_five_failures_within_the_window_give_up_but_spread_out_ones_do_not() -> None:
    budget = RestartBudget(RestartPolicy(), rand=lambda: 0.0)
    assert [budget.failed(t) for t in (0, 1, 2, 3)] == [0.5, 1, 2, 4]
    assert budget.failed(4) is None

    spread = RestartBudget(RestartPolicy(), rand=lambda: 0.0)
    assert all(spread.failed(t) is not None for t in range(0, 600, 16))  # at most 4 in any 60 s


def test_a_healthy_run_starts_the_backoff_over() -> None:
    budget = RestartBudget(RestartPolicy(), rand=lambda: 0.0)
    assert [budget.failed(t) for t in (0, 1, 2)] == [0.5, 1, 2]
    budget.started(5)
    assert not budget.check_healthy(34)
    assert budget.check_healthy(35)  # 30 s of running
    assert budget.failed(100) == 0.5
    assert budget.restarts == 4

    unhealthy = RestartBudget(RestartPolicy(), rand=lambda: 0.0)
    unhealthy.failed(0)
    unhealthy.started(1)
    assert unhealthy.failed(20) == 1  # 19 s was not long enough


# ---------------------------------------------------------------- pure helpers


def test_default_plan_runs_the_perseus_commands_with_this_python() -> None:
    plan = default_plan({})
    cli = (sys.executable, "-m", "perseus_cli.cli")
    assert [(c.name, c.argv) for c in plan.children] == [
        ("core", (*cli, "core")),
        ("rest", (*cli, "rest")),
        ("ws", (*cli, "ws")),
    ]
    assert plan.migrate == (*cli, "migrate")
    assert plan.create_key == (*cli, "keys", "create", "--tier", "internal", "--name", DEV_KEY_NAME, "--replace")
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
