"""No setting error, startup error or log line prints a store's password or a URL's token (issue 16).

The real ``perseus`` processes are started with URLs that carry a distinctive password, each one bad in a
different way (unreachable, malformed, refused); the password must appear nowhere in what they print, while
the message still names the variable and the host to correct.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from core.adapters.venues.coinbase import CoinbaseProtocol
from core.adapters.venues.runner import VenueRunner
from tests.support.processes import free_port, run_cli
from tests.support.replay import ReplayServer, Script, wait_until

PASSWORD = "Zq9pw7Secret"

Case = Callable[[], tuple[list[str], dict[str, str], str, str]]


def unreachable_database() -> tuple[list[str], dict[str, str], str, str]:
    url = f"postgresql://perseus:{PASSWORD}@127.0.0.1:{free_port()}/perseus"
    return ["migrate"], {"PERSEUS_DATABASE_URL": url}, "PERSEUS_DATABASE_URL", "127.0.0.1"


def malformed_database() -> tuple[list[str], dict[str, str], str, str]:
    url = f"postgresql://perseus:{PASSWORD}@[::1:5432/perseus?password={PASSWORD}"
    return ["migrate"], {"PERSEUS_DATABASE_URL": url}, "PERSEUS_DATABASE_URL", "[::1:5432"


@pytest.mark.parametrize("case", [unreachable_database, malformed_database])
def test_migrate_never_prints_the_database_password(case: Case) -> None:
    args, env, variable, host = case()
    result = run_cli(args, env)
    assert_masked(result.returncode, result.stdout + result.stderr, variable, host)


def test_core_never_prints_an_unreachable_database_password(base_env: dict[str, str]) -> None:
    url = f"postgresql://perseus:{PASSWORD}@127.0.0.1:{free_port()}/perseus"
    env = {**base_env, "PERSEUS_DATABASE_URL": url, "PERSEUS_CORE_ADDR": f"127.0.0.1:{free_port()}"}
    result = run_cli(["core"], env)
    assert_masked(result.returncode, result.stdout + result.stderr, "PERSEUS_DATABASE_URL", "127.0.0.1")


def test_core_never_prints_a_malformed_read_url_password(migrated_env: dict[str, str]) -> None:
    url = f"postgresql://reader:{PASSWORD}@127.0.0.1:54x/perseus?sslpassword={PASSWORD}"
    env = {**migrated_env, "PERSEUS_DATABASE_READ_URL": url, "PERSEUS_CORE_ADDR": f"127.0.0.1:{free_port()}"}
    result = run_cli(["core"], env)
    assert_masked(result.returncode, result.stdout + result.stderr, "PERSEUS_DATABASE_READ_URL", "127.0.0.1:54x")


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
def test_core_never_prints_an_unreachable_redis_acl_password(migrated_env: dict[str, str], scheme: str) -> None:
    url = f"{scheme}://acl-user:{PASSWORD}@127.0.0.1:{free_port()}/0?password={PASSWORD}"
    env = {**migrated_env, "PERSEUS_REDIS_URL": url, "PERSEUS_CORE_ADDR": f"127.0.0.1:{free_port()}"}
    result = run_cli(["core"], env)
    assert_masked(result.returncode, result.stdout + result.stderr, "PERSEUS_REDIS_URL", "127.0.0.1")


@pytest.mark.parametrize("process", ["rest", "ws"])
def test_gateways_never_print_an_unreachable_redis_password(process: str) -> None:
    url = f"rediss://acl-user:{PASSWORD}@127.0.0.1:{free_port()}/0"
    env = {
        "PERSEUS_REDIS_URL": url,
        "PERSEUS_CORE_ADDR": f"127.0.0.1:{free_port()}",
        f"PERSEUS_{process.upper()}_ADDR": f"127.0.0.1:{free_port()}",
    }
    result = run_cli([process], env)
    assert_masked(result.returncode, result.stdout + result.stderr, "PERSEUS_REDIS_URL", "127.0.0.1")


async def test_a_venue_url_token_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """``PERSEUS_<VENUE>_URL`` is a secret (a proxy's URL may carry a token): "connected to" shows it masked."""
    caplog.set_level(logging.INFO, logger="core.adapters.venues.runner")
    async with ReplayServer([Script()]) as server:
        url = f"{server.url}/feed?token={PASSWORD}"
        runner = VenueRunner(lambda: CoinbaseProtocol(["BTC-USD"], url=url), _discard)
        task = asyncio.create_task(runner.run())
        try:
            await wait_until(lambda: runner.connected)
            await wait_until(lambda: "connected to" in caplog.text)
        finally:
            await runner.aclose()
            await task
    assert PASSWORD not in caplog.text
    assert f"connected to {server.url}/feed?token=***" in caplog.text


async def _discard(events: object) -> None:
    return None


def assert_masked(returncode: int, output: str, variable: str, host: str) -> None:
    assert returncode != 0, output
    assert PASSWORD not in output
    line = next((line for line in output.splitlines() if variable in line), "")
    assert host in line, output
