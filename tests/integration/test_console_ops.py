"""The operator view (issue 20, item 3): ``GET /internal/v1/ops`` for admin keys, and the page ``/console/ops``.

Real processes over the session's PostgreSQL and Redis (a private key prefix): an exchange-mode core running
``sim``, a REST gateway and WebSocket gateways started as users start them. Every wait polls the endpoint
until the expected state shows (each gateway writes its record every 2 s; a record lives 10 s).
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from gateways.common.ops_stats import RECORD_TTL_S, gateway_id
from gateways.rest.docs import PAGE_HEADERS
from tests.support.processes import Process, running_core, running_gateway
from tests.support.rest_stack import make_key

pytestmark = pytest.mark.integration

OPS = "/internal/v1/ops"
WAIT_S = 20.0
TIERS = ("free", "pro", "internal", "admin")


@dataclass
class OpsStack:
    env: dict[str, str]
    core: Process
    rest: Process
    ws: Process
    keys: dict[str, str]

    def ops(self, tier: str | None = "admin", key: str | None = None) -> httpx.Response:
        chosen = key or (self.keys[tier] if tier else None)
        headers = {"X-API-Key": chosen} if chosen else {}
        return httpx.get(f"http://{self.rest.addr}{OPS}", headers=headers, timeout=10)

    def data(self) -> dict[str, Any]:
        response = self.ops()
        assert response.status_code == 200, response.text
        return response.json()["data"]  # type: ignore[no-any-return]

    def until(self, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            data = self.data()
            if check(data):
                return data
            assert time.monotonic() < deadline, f"{what}; last answer: {json.dumps(data)[:3000]}"
            time.sleep(0.25)


def row_id(process: Process, kind: str) -> str:
    return gateway_id(kind, int(process.addr.rsplit(":", 1)[1]), socket.gethostname())


def row(data: dict[str, Any], gid: str) -> dict[str, Any] | None:
    return next((g for g in data["gateways"] if g["id"] == gid), None)


@pytest.fixture(scope="module")
def stack(migrated_env: dict[str, str]) -> Iterator[OpsStack]:
    # A prefix of its own: the ops index and the rate-limit counters (by key id) are this module's alone.
    env = {**migrated_env, "PERSEUS_REDIS_PREFIX": f"{migrated_env['PERSEUS_REDIS_PREFIX']}ops-{secrets.token_hex(3)}:"}
    keys = {tier: make_key(env, tier) for tier in TIERS}
    with (
        running_core(env) as core,
        running_gateway("rest", env, core.addr) as rest,
        running_gateway("ws", env, core.addr) as ws,
    ):
        yield OpsStack(env, core, rest, ws, keys)


def test_an_admin_key_gets_the_gateways_the_core_and_its_dependencies(stack: OpsStack) -> None:
    rest_id, ws_id = row_id(stack.rest, "rest"), row_id(stack.ws, "ws")
    data = stack.until(
        lambda d: (
            row(d, rest_id) is not None
            and row(d, ws_id) is not None
            and any(w["exchange"] == "sim" and w["leader"] for w in d["writers"])
            and d["core"]["ingest"]["ticks_total"] > 0
        ),
        "both gateways listed, sim's writer elected and ticks stored",
    )
    assert row(data, rest_id)["kind"] == "rest"  # type: ignore[index]
    assert row(data, ws_id)["kind"] == "ws"  # type: ignore[index]
    core = data["core"]
    assert core["reachable"] is True
    assert core["mode"] == "exchange"
    assert set(core["streams"]) == {"sessions", "channels"}
    assert core["streams"]["sessions"] >= 1  # the WS gateway's multiplex stream (and the candle cache)
    assert core["ingest"]["last_stored_at"].endswith("Z")
    assert core["ingest"]["lag_ms"] >= 0
    assert {d["name"]: d["healthy"] for d in data["dependencies"]} == {"redis": True, "postgres": True}
    sim = next(w for w in data["writers"] if w["exchange"] == "sim")
    assert sim["term"] >= 1
    # the ingest rate is measured between two readings: the sim venue keeps trading
    stack.until(lambda d: d["core"]["ingest"]["ticks_per_second"] > 0, "an ingest rate above zero")


@pytest.mark.parametrize("tier", ["free", "pro", "internal"])
def test_a_key_that_is_not_an_admin_key_gets_403_in_the_contract_format(stack: OpsStack, tier: str) -> None:
    response = stack.ops(tier)
    assert response.status_code == 403
    body = response.json()
    assert body["status"] == 403
    assert body["error"]["code"] == "FORBIDDEN"
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert "data" not in body


def test_no_key_or_an_unknown_key_gets_401(stack: OpsStack) -> None:
    assert stack.ops(None).status_code == 401
    unknown = stack.ops(key="pk_admin_" + "x" * 40)
    assert unknown.status_code == 401
    assert unknown.json()["error"]["code"] == "UNAUTHORIZED"


def test_websocket_clients_raise_the_gateways_connection_and_channel_counts(stack: OpsStack) -> None:
    ws_id = row_id(stack.ws, "ws")
    base = stack.until(lambda d: row(d, ws_id) is not None, "the WS gateway listed")
    connections = row(base, ws_id)["connections"]  # type: ignore[index]
    url = f"ws://{stack.ws.addr}/public/v1/stream?apiKey={stack.keys['admin']}"
    with ExitStack() as clients:
        opened = [clients.enter_context(connect(url, open_timeout=10)) for _ in range(3)]
        opened[0].send(json.dumps({"action": "subscribe", "channels": ["prices:BTC-USD", "candles:ETH-USD:1m"]}))
        reply = json.loads(opened[0].recv(timeout=10))
        assert reply["type"] == "subscribed", reply
        data = stack.until(
            lambda d: (g := row(d, ws_id)) is not None and g["connections"] == connections + 3 and g["channels"] >= 2,
            "three more connections and the two channels counted",
        )
        assert row(data, ws_id)["skipped_events"] >= 0  # type: ignore[index]
    stack.until(
        lambda d: (g := row(d, ws_id)) is not None and g["connections"] == connections, "the connections closed"
    )


def test_two_ws_gateways_are_two_rows_and_a_killed_one_leaves_after_the_ttl(stack: OpsStack) -> None:
    first = row_id(stack.ws, "ws")
    with running_gateway("ws", stack.env, stack.core.addr) as second:
        second_id = row_id(second, "ws")
        data = stack.until(lambda d: row(d, second_id) is not None, "the second WS gateway listed")
        assert row(data, first) is not None
        assert len([g for g in data["gateways"] if g["kind"] == "ws"]) == 2
        second.proc.kill()  # no clean stop: its record is not removed, it expires
        second.proc.wait()
        killed = time.monotonic()
        assert row(stack.data(), second_id) is not None  # still there: it was written less than 2 s ago
        stack.until(lambda d: row(d, second_id) is None, "the killed gateway gone", timeout=RECORD_TTL_S + 5)
        assert time.monotonic() - killed > RECORD_TTL_S / 2  # gone by its TTL, not at once
        assert row(stack.data(), first) is not None


def test_a_gateway_stopped_cleanly_leaves_at_once(stack: OpsStack) -> None:
    with running_gateway("ws", stack.env, stack.core.addr) as third:
        third_id = row_id(third, "ws")
        stack.until(lambda d: row(d, third_id) is not None, "the third WS gateway listed")
        assert third.stop() == 0
        stopped = time.monotonic()
        stack.until(lambda d: row(d, third_id) is None, "the stopped gateway gone")
        assert time.monotonic() - stopped < RECORD_TTL_S - 2  # removed on stop, before its TTL


def spent(data: dict[str, Any]) -> dict[str, int]:
    return {k["tier"]: k["used"] for k in data["top_keys"]}


def test_top_keys_follow_the_requests_keys_made(stack: OpsStack) -> None:
    rest = f"http://{stack.rest.addr}"
    for _ in range(3):  # the counts are per minute: again if the minute ends before they are seen
        expected, resets = {}, set()
        with httpx.Client(base_url=rest, timeout=10) as client:
            for tier, count in (("pro", 7), ("free", 3)):
                for _ in range(count):
                    response = client.get("/public/v1/exchanges", headers={"X-API-Key": stack.keys[tier]})
                    assert response.status_code == 200, response.text
                # what the key has spent this minute, as the last answer's rate-limit headers say
                limit, remaining = (
                    int(response.headers["X-RateLimit-Limit"]),
                    int(response.headers["X-RateLimit-Remaining"]),
                )
                expected[tier] = limit - remaining
                resets.add(int(response.headers["X-RateLimit-Reset"]))
        if len(resets) > 1:
            continue  # a minute turned between the keys' requests
        (reset,) = resets
        answer = stack.ops()
        data = stack.until(
            lambda d, e=expected, r=reset: spent(d) == e or time.time() >= r,
            "every request counted in the top keys (a record written mid-way holds fewer)",
        )
        if time.time() >= reset:
            continue
        top = data["top_keys"]
        by_tier = {k["tier"]: k for k in top}
        assert [k["used"] for k in top] == sorted(expected.values(), reverse=True)  # the biggest spender first
        assert by_tier["pro"]["limit"] == 10_000 and by_tier["free"]["limit"] == 1_000
        assert "admin" not in by_tier and "internal" not in by_tier  # keys that spent nothing this minute
        assert set(by_tier["pro"]) == {"key_id", "name", "tier", "used", "limit", "share", "window_resets_at"}
        text = answer.text + json.dumps(data)
        for key in stack.keys.values():
            assert key not in text  # no secret anywhere
        return
    pytest.fail("a minute turned during every attempt")


def test_the_page_is_served_with_the_docs_pages_headers_and_its_hooks(stack: OpsStack) -> None:
    page = httpx.get(f"http://{stack.rest.addr}/console/ops", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for name, value in PAGE_HEADERS.items():
        assert page.headers[name] == value
    html = page.text
    for hook in (
        "data-state=loading",
        "id=gateways",
        "id=core-streams",
        "id=writers",
        "id=deps",
        "id=top-keys",
        "data-role=error",
        "id=key-input",
        "id=key-submit",
        "data-dep=redis",
        "data-dep=postgres",
    ):
        assert hook in html, hook
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    for asset in ("/console/ops/ops.js", "/console/ops/ops.css"):
        response = httpx.get(f"http://{stack.rest.addr}{asset}", timeout=10)
        assert response.status_code == 200, asset
        assert response.headers["Content-Security-Policy"] == PAGE_HEADERS["Content-Security-Policy"]
        assert "http://" not in response.text and "https://" not in response.text
