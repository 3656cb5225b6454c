"""Several cores on one host: with ``PERSEUS_CORE_METRICS_ADDR`` unset each finds a metrics port of its own,
logs it, and serves ``/metrics`` there; an explicit address that is taken still stops startup."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from tests.support.processes import Process, free_port, grpc_serving, run_cli, spawn, wait_until

pytestmark = pytest.mark.integration

METRICS_LINE = re.compile(r"core metrics at http://(\S+)/metrics")


@contextmanager
def core_with_default_metrics(env: dict[str, str]) -> Iterator[Process]:
    """A ``perseus core`` whose environment has no ``PERSEUS_CORE_METRICS_ADDR`` at all."""
    addr = f"127.0.0.1:{free_port()}"
    process = spawn(["core"], {**env, "PERSEUS_CORE_ADDR": addr}, addr, unset=("PERSEUS_CORE_METRICS_ADDR",))
    try:
        wait_until(lambda: grpc_serving(addr), process, "perseus core")
        yield process
    finally:
        process.close()


def printed_metrics_addr(process: Process) -> str:
    found = METRICS_LINE.findall(process.output())
    assert len(found) == 1, process.output()
    return str(found[0])


def test_two_cores_with_default_metrics_settings_both_start_and_serve_metrics_where_they_say(
    migrated_env: dict[str, str],
) -> None:
    env = {**migrated_env, "PERSEUS_MODE": "pw-host"}
    with ExitStack() as stack:
        first = stack.enter_context(core_with_default_metrics(env))
        second = stack.enter_context(core_with_default_metrics(env))
        addrs = [printed_metrics_addr(first), printed_metrics_addr(second)]
        assert addrs[0] != addrs[1]
        for addr in addrs:
            host, _, port = addr.rpartition(":")
            assert host == "127.0.0.1" and int(port) >= 9464  # the default address, or the next free port up
            response = httpx.get(f"http://{addr}/metrics", timeout=5)
            assert response.status_code == 200
            assert "perseus_core_tasks " in response.text


def test_an_explicit_metrics_address_that_is_taken_still_stops_startup(migrated_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_cli(["core"], {**migrated_env, "PERSEUS_MODE": "pw-host", "PERSEUS_CORE_METRICS_ADDR": addr})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("perseus core: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"perseus core: PERSEUS_CORE_METRICS_ADDR: cannot listen on {addr}")
