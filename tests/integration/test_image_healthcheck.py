"""The image's HEALTHCHECK script (deploy/docker/healthcheck.py) against real processes: healthy for a
serving core and gateways, unhealthy when nothing listens or a gateway's core is away. No Docker engine
runs in CI, so the script is run here as the image runs it: ``python -I healthcheck.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Process, free_port, running_gateway

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"


def healthcheck(command: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), command],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=15,
    )


def wildcard(addr: str) -> str:
    """The address as the image sets it (0.0.0.0:port); the script must probe loopback."""
    return "0.0.0.0:" + addr.rpartition(":")[2]


@pytest.fixture(scope="module")
def ws(migrated_env: dict[str, str], core: Process) -> Iterator[Process]:
    with running_gateway("ws", migrated_env, core.addr) as process:
        yield process


def test_a_serving_core_is_healthy(core: Process) -> None:
    result = healthcheck("core", PERSEUS_CORE_ADDR=wildcard(core.addr))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "core: SERVING"


def test_serving_gateways_are_healthy(rest: Process, ws: Process) -> None:
    for command, variable, process in (("rest", "PERSEUS_REST_ADDR", rest), ("ws", "PERSEUS_WS_ADDR", ws)):
        result = healthcheck(command, **{variable: wildcard(process.addr)})
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == f"{command}: 200"


def test_nothing_listening_is_unhealthy_quickly() -> None:
    port = free_port()
    for command, variable in (("core", "PERSEUS_CORE_ADDR"), ("rest", "PERSEUS_REST_ADDR")):
        result = healthcheck(command, **{variable: f"127.0.0.1:{port}"})
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr


def test_a_gateway_without_its_core_is_unhealthy(base_env: dict[str, str]) -> None:
    with running_gateway("rest", base_env, f"127.0.0.1:{free_port()}") as gateway:
        result = healthcheck("rest", PERSEUS_REST_ADDR=gateway.addr)
    assert result.returncode == 1
    assert result.stdout.strip() == "rest: 503"


def test_a_migration_job_has_nothing_to_probe() -> None:
    assert healthcheck("migrate").returncode == 0
