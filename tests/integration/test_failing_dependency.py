"""Seed 004's DATABASE_ERROR and CACHE_ERROR (issue 17): kept as ``SERVICE_UNAVAILABLE`` (503), with the store
that failed in ``details.dependency``, through a real REST gateway and core on a PostgreSQL of the module's own
that is stopped under them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from perseus_cli.devstack.postgres import EmbeddedPostgres
from tests.support.processes import Process, run_cli, running_core, running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("failing-dependency")]


@pytest.fixture(scope="module")
def stack(private_postgres: EmbeddedPostgres, redis_url: str, redis_prefix: str) -> Iterator[tuple[Process, str]]:
    env = {
        "PERSEUS_DATABASE_URL": private_postgres.url,
        "PERSEUS_REDIS_URL": redis_url,
        "PERSEUS_REDIS_PREFIX": f"{redis_prefix}faildep:",
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_LOG_FORMAT": "text",
    }
    assert run_cli(["migrate"], env).returncode == 0
    created = run_cli(["keys", "create", "--tier", "pro"], env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    with running_core(env, PERSEUS_MODE="pw-host") as core, running_gateway("rest", env, core.addr) as rest:
        yield rest, key


def get(rest: Process, key: str, path: str) -> httpx.Response:
    return httpx.get(f"http://{rest.addr}{path}", headers={"X-API-Key": key}, timeout=10)


def test_a_stopped_postgresql_is_503_naming_it(private_postgres: EmbeddedPostgres, stack: tuple[Process, str]) -> None:
    rest, key = stack
    assert get(rest, key, "/public/v1/exchanges").status_code == 200  # the key is checked (and kept) now
    private_postgres.stop()
    try:
        deadline = time.monotonic() + 15
        while True:
            response = get(rest, key, "/public/v1/exchanges")
            if response.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "SERVICE_UNAVAILABLE"
        assert error["details"] == {"dependency": "postgres"}
        assert "Traceback" not in response.text
    finally:
        private_postgres.start()
    deadline = time.monotonic() + 20
    while get(rest, key, "/public/v1/exchanges").status_code != 200:  # the pool reconnects: answers again
        assert time.monotonic() < deadline, "no answer after PostgreSQL came back"
        time.sleep(0.3)
