"""Alert webhooks (issue 21) through the running stack: a real core (exchange mode, its delivery worker), the
REST gateway, PostgreSQL, and a real HTTP receiver on loopback (plain http to 127.0.0.1 is allowed by
``PERSEUS_WEBHOOK_ALLOW_HOSTS``, as a test or a local receiver would set it).

Alerts are stored by the core's own :class:`AlertStore` (what the indicator pipeline calls), which writes
the webhook outbox in the same statement; the receiver checks every signature with the secret the creation
answer gave, as a user would (docs/guides/webhooks.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal as D
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import jsonschema
import pytest

import perseus_sdk
from core.adapters.alert_store import AlertStore
from core.domain.signals import Alert, Direction, Strength
from core.domain.timeframes import Timeframe
from core.services.indicators import NewAlert
from tests.support.databases import scratch_database
from tests.support.processes import (
    Process,
    free_port,
    grpc_serving,
    run_cli,
    running_core,
    running_gateway,
    spawn,
    wait_until,
)
from tests.support.rest_stack import make_key

pytestmark = pytest.mark.integration

WAIT_S = 20.0
T0 = 1_800_000_000_000
MIN = 60_000
MAX_ENDPOINTS = 4
QUIET = "QUIET-USD"  # a symbol no alert is raised for: the simulated exchange's alerts stay away
WEBHOOK_ENV = {
    "PERSEUS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "PERSEUS_WEBHOOK_RETRY_BASE_S": "0.2",
    "PERSEUS_WEBHOOK_RETRY_MAX_S": "0.4",
    "PERSEUS_WEBHOOK_TIMEOUT_S": "1",
    "PERSEUS_WEBHOOK_MAX_ENDPOINTS": str(MAX_ENDPOINTS),
    "PERSEUS_SIM_TRADES_PER_S": "1",
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 recording every POST; each path answers from its plan (then 200)."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    plans: dict[str, list[int]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)  # of answers that are not 2xx
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def answer(self, path: str) -> tuple[int, float]:
        with self.lock:
            plan = self.plans.get(path) or []
            status = plan.pop(0) if plan else 200
            return status, self.delays.get(path, 0.0)


@contextmanager
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            box = holder[0]
            status, delay = box.answer(self.path)
            with box.lock:
                box.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            time.sleep(delay)
            answer = box.bodies.get(self.path, b"ok") if status >= 300 else b"ok"
            try:
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/redirected")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):  # the sender gave up first (its timeout)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance_s: int = 300) -> bool:
    """What a receiver does (the guide's snippet): recompute v1 over "<t>.<body>" and compare in constant time."""
    parts = dict(item.split("=", 1) for item in headers["x-perseus-signature"].split(","))
    timestamp = int(parts["t"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(time.time() - timestamp) <= tolerance_s and hmac.compare_digest(expected, parts["v1"])


@dataclass
class Stack:
    env: dict[str, str]
    core: Process
    rest: Process
    pool: asyncpg.Pool
    sim_id: int
    hooks: Receiver
    exits: ExitStack

    def call(self, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        url = f"http://{self.rest.addr}{path}"
        return httpx.request(method, url, headers={"X-API-Key": key}, timeout=10, **kwargs)

    def create(self, key: str, path: str, **filters: str) -> dict[str, Any]:
        response = self.call("POST", "/public/v1/webhooks", key, json={"url": self.hooks.url(path), **filters})
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def log(self, key: str, webhook_id: str) -> list[dict[str, Any]]:
        response = self.call("GET", f"/public/v1/webhooks/{webhook_id}/deliveries", key)
        assert response.status_code == 200, response.text
        deliveries: list[dict[str, Any]] = response.json()["data"]
        return deliveries

    def restart_core(self) -> None:
        """Stop the core, then start another on the same address (the gateway keeps its target)."""
        self.core.stop()
        addr = self.core.addr
        self.core = spawn(["core"], {**self.env, "PERSEUS_CORE_ADDR": addr}, addr)
        self.exits.callback(self.core.close)
        wait_until(lambda: grpc_serving(addr), self.core, "the restarted core")
        key, deadline = make_key(self.env, "pro"), time.monotonic() + WAIT_S
        while self.call("GET", "/public/v1/webhooks", key).status_code != 200:  # the gateway reconnected
            assert time.monotonic() < deadline, "the gateway did not reach the restarted core"
            time.sleep(0.1)

    async def alert(self, symbol: str, i: int, timeframe: Timeframe = Timeframe.M1) -> int:
        alert = Alert(
            open_time=T0 + i * MIN,
            alert_type="macdv_level",
            trigger_label="level_+50_up",
            trigger_value=50.5,
            signal_delta=1.25,
            signal_type="momentum_signal",
            direction=Direction.BULLISH,
            strength=Strength.MODERATE,
        )
        stored = await AlertStore(self.pool).insert(
            [NewAlert(self.sim_id, "sim", symbol, timeframe, alert, D(f"100.{i}5"))]
        )
        assert len(stored) == 1
        return stored[0].id


@pytest.fixture(scope="module")
async def stack(base_env: dict[str, str], admin_database_url: str) -> AsyncIterator[Stack]:
    name = f"perseus_hooks_{secrets.token_hex(4)}"
    async with scratch_database(admin_database_url, name) as url:
        prefix = f"{base_env['PERSEUS_REDIS_PREFIX']}{name}:"
        env = {**base_env, "PERSEUS_DATABASE_URL": url, "PERSEUS_REDIS_PREFIX": prefix, **WEBHOOK_ENV}
        env["PERSEUS_CORE_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"  # the core's (a restarted one's too)
        result = run_cli(["migrate"], env)
        assert result.returncode == 0, result.stderr
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            sim_id = await pool.fetchval("SELECT id FROM exchanges WHERE name = 'sim'")
            with ExitStack() as exits:
                hooks = exits.enter_context(receiver())
                core = exits.enter_context(running_core(env))
                rest = exits.enter_context(running_gateway("rest", env, core.addr))
                yield Stack(env, core, rest, pool, sim_id, hooks, exits)
        finally:
            await pool.close()


@pytest.fixture(scope="module")
def keys(stack: Stack) -> Callable[[], str]:
    return lambda: make_key(stack.env, "pro")


async def until(check: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_secret_once_and_a_signed_delivery_of_the_public_projection(
    stack: Stack, keys: Callable[[], str]
) -> None:
    key = keys()
    created = stack.create(key, "/one", symbol="HOOKA-USD")
    assert created["id"].startswith("wh_") and created["secret"].startswith("whsec_")
    assert created["url"] == stack.hooks.url("/one") and created["symbol"] == "HOOKA-USD"
    assert created["enabled"] is True and created["exchange"] is None
    listed = stack.call("GET", "/public/v1/webhooks", key).json()["data"]
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0] and created["secret"] not in json.dumps(listed)
    assert "key_id" not in listed[0] and "row_id" not in listed[0]

    await stack.alert("HOOKA-USD", 1)
    await until(lambda: len(stack.hooks.at("/one")) >= 1, "the delivery")
    await until(lambda: stack.log(key, created["id"])[0]["status"] == "delivered", "the log")
    [got] = stack.hooks.at("/one")
    assert verify(created["secret"], got.headers, got.body)
    assert not verify("whsec_" + "0" * 64, got.headers, got.body)
    assert perseus_sdk.verify_signature(got.body, got.headers["x-perseus-signature"], created["secret"])
    assert got.headers["content-type"] == "application/json"
    event = json.loads(got.body)
    assert event["type"] == "trade_signal" and event["id"] == got.headers["x-perseus-event-id"]
    # the same projection as the /public/v1/alerts items: nothing internal
    alerts = stack.call("GET", "/public/v1/alerts?symbol=HOOKA-USD", key).json()["data"]
    assert event["data"] == alerts[0]
    assert "alert_type" not in event["data"] and "trigger_value" not in event["data"]
    [delivery] = stack.log(key, created["id"])
    assert delivery["event_id"] == event["id"] and delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200 and delivery["event_type"] == "trade_signal"
    assert len(stack.hooks.at("/one")) == 1  # delivered once


async def test_a_failing_endpoint_is_retried_and_gets_every_event_in_order(
    stack: Stack, keys: Callable[[], str]
) -> None:
    key = keys()
    created = stack.create(key, "/flaky", symbol="HOOKB-USD")
    stack.hooks.plans["/flaky"] = [500, 500, 503]
    ids = [await stack.alert("HOOKB-USD", i) for i in range(3)]
    await until(lambda: all(d["status"] == "delivered" for d in stack.log(key, created["id"])), "the deliveries")
    got = stack.hooks.at("/flaky")
    assert all(verify(created["secret"], r.headers, r.body) for r in got)
    # three refused attempts of the first event (same event id), then the three events in order
    first = got[0].headers["x-perseus-event-id"]
    assert [r.headers["x-perseus-event-id"] for r in got[:4]] == [first] * 4
    delivered_prices = [json.loads(r.body)["data"]["price"] for r in got[3:]]
    assert delivered_prices == ["100.05", "100.15", "100.25"] and len(ids) == 3
    log = stack.log(key, created["id"])  # newest first
    assert [d["attempts"] for d in log] == [1, 1, 4]
    assert log[-1]["last_status_code"] == 200 and log[-1]["event_id"] == first


async def test_an_outbox_row_survives_a_core_restart(stack: Stack, keys: Callable[[], str]) -> None:
    key = keys()
    created = stack.create(key, "/restart", symbol="HOOKC-USD")
    stack.core.stop()  # no core runs when the alert is stored
    await stack.alert("HOOKC-USD", 1)
    assert stack.hooks.at("/restart") == []
    stack.restart_core()
    await until(lambda: len(stack.hooks.at("/restart")) == 1, "the delivery after the restart")
    [got] = stack.hooks.at("/restart")
    assert verify(created["secret"], got.headers, got.body)


async def test_a_core_restart_mid_retry_loses_nothing(stack: Stack, keys: Callable[[], str]) -> None:
    key = keys()
    created = stack.create(key, "/midretry", symbol="HOOKH-USD")
    stack.hooks.plans["/midretry"] = [500] * 1000  # down
    await stack.alert("HOOKH-USD", 1)
    await until(lambda: len(stack.hooks.at("/midretry")) >= 2, "two refused attempts")
    stack.core.stop()
    refused = len(stack.hooks.at("/midretry"))
    stack.hooks.plans["/midretry"] = []  # back up
    stack.restart_core()
    await until(lambda: stack.log(key, created["id"])[0]["status"] == "delivered", "the delivery after the restart")
    got = stack.hooks.at("/midretry")
    assert len({r.headers["x-perseus-event-id"] for r in got}) == 1  # one event, retried across the restart
    assert len(got) > refused and verify(created["secret"], got[-1].headers, got[-1].body)
    [delivery] = stack.log(key, created["id"])
    # every recorded attempt was received (one in flight when the core stopped may be received, not recorded)
    assert 2 <= delivery["attempts"] <= len(got) and delivery["last_status_code"] == 200


async def test_two_cores_deliver_each_event_once(stack: Stack, keys: Callable[[], str]) -> None:
    key = keys()
    paths = [f"/pair{n}" for n in range(4)]
    for path in paths:
        stack.create(key, path, symbol="HOOKJ-USD")
    second = {**stack.env, "PERSEUS_CORE_METRICS_ADDR": ""}
    with running_core(second):  # a second core: its worker claims from the same outbox
        for i in range(10):
            await stack.alert("HOOKJ-USD", i)
        await until(lambda: all(len(stack.hooks.at(path)) >= 10 for path in paths), "every delivery")
        await asyncio.sleep(1.0)  # room for a duplicate to show
    for path in paths:
        got = stack.hooks.at(path)
        assert len(got) == 10 and len({r.headers["x-perseus-event-id"] for r in got}) == 10
        assert [json.loads(r.body)["data"]["price"] for r in got] == [f"100.{i}5" for i in range(10)]


async def test_the_core_counts_attempts_by_outcome(stack: Stack, keys: Callable[[], str]) -> None:
    def counts() -> dict[str, float]:
        text = httpx.get(f"http://{stack.env['PERSEUS_CORE_METRICS_ADDR']}/metrics", timeout=10).text
        found = {}
        for line in text.splitlines():
            if line.startswith("perseus_webhook_attempts_total{"):
                name, value = line.rsplit(" ", 1)
                found[name.split('"')[1]] = float(value)
        return found

    before = counts()
    assert set(before) == {"delivered", "retry", "failed", "gone"}
    key = keys()
    created = stack.create(key, "/counted", symbol="HOOKK-USD")
    stack.hooks.plans["/counted"] = [500, 500]
    await stack.alert("HOOKK-USD", 1)
    await until(lambda: stack.log(key, created["id"])[0]["status"] == "delivered", "the delivery")
    after = counts()
    assert after["retry"] - before["retry"] == 2 and after["delivered"] - before["delivered"] == 1


async def test_filters_choose_the_alerts(stack: Stack, keys: Callable[[], str]) -> None:
    key = keys()
    created = stack.create(key, "/filtered", symbol="hookd/usd", timeframe="1H", exchange="SIM")
    assert (created["symbol"], created["timeframe"], created["exchange"]) == ("HOOKD-USD", "1h", "sim")
    other = stack.create(key, "/typed", symbol="HOOKD-USD", signal_type="signal_line_cross")
    await stack.alert("HOOKE-USD", 1, Timeframe.H1)  # another symbol
    await stack.alert("HOOKD-USD", 2, Timeframe.M1)  # another timeframe
    await stack.alert("HOOKD-USD", 3, Timeframe.H1)  # the one
    # the outbox rows are written with the alerts: the log is exact at once
    assert [d["event_type"] for d in stack.log(key, created["id"])] == ["trade_signal"]
    assert stack.log(key, other["id"]) == []  # momentum_signal is not signal_line_cross
    await until(lambda: len(stack.hooks.at("/filtered")) == 1, "the delivery")
    event = json.loads(stack.hooks.at("/filtered")[0].body)
    assert (event["data"]["symbol"], event["data"]["timeframe"]) == ("HOOKD-USD", "1h")


async def test_the_test_ping_is_signed_and_logged(stack: Stack, keys: Callable[[], str]) -> None:
    key = keys()
    created = stack.create(key, "/ping", symbol=QUIET)
    response = stack.call("POST", f"/public/v1/webhooks/{created['id']}/test", key)
    assert response.status_code == 200, response.text
    delivery = response.json()["data"]
    assert delivery["status"] == "delivered" and delivery["event_type"] == "ping"
    [got] = stack.hooks.at("/ping")
    assert verify(created["secret"], got.headers, got.body)
    event = json.loads(got.body)
    assert event == {"id": delivery["event_id"], "type": "ping", "created": event["created"],
                     "data": {"webhook_id": created["id"]}}  # fmt: skip
    assert got.headers["x-perseus-event-id"] == delivery["event_id"]
    assert stack.log(key, created["id"])[0]["event_id"] == delivery["event_id"]
    stack.hooks.plans["/ping"] = [500]
    failed = stack.call("POST", f"/public/v1/webhooks/{created['id']}/test", key).json()["data"]
    assert failed["status"] == "failed" and failed["last_status_code"] == 500


async def test_another_key_cannot_see_test_or_delete_an_endpoint(stack: Stack, keys: Callable[[], str]) -> None:
    owner, stranger = keys(), keys()
    created = stack.create(owner, "/mine", symbol=QUIET)
    assert stack.call("GET", "/public/v1/webhooks", stranger).json()["data"] == []
    for method, path in (
        ("DELETE", f"/public/v1/webhooks/{created['id']}"),
        ("GET", f"/public/v1/webhooks/{created['id']}/deliveries"),
        ("POST", f"/public/v1/webhooks/{created['id']}/test"),
    ):
        response = stack.call(method, path, stranger)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert stack.hooks.at("/mine") == []
    assert stack.call("DELETE", f"/public/v1/webhooks/{created['id']}", owner).status_code == 204
    assert stack.call("GET", "/public/v1/webhooks", owner).json()["data"] == []
    assert stack.call("DELETE", f"/public/v1/webhooks/{created['id']}", owner).status_code == 404
    assert stack.call("GET", "/public/v1/webhooks", "pk_pro_" + "x" * 40).status_code == 401


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "https://"),
        ({"url": "http://192.0.2.10/x"}, "https://"),  # plain http to a host that is not listed
        ({"url": "https://10.1.2.3/x"}, "private"),
        ({"url": "https://169.254.169.254/latest/meta-data"}, "private"),  # link-local (cloud metadata)
        ({"url": "https://[::1]:8443/x"}, "private"),
        ({"url": "https://localhost:8443/x"}, "private"),  # a name resolving to loopback, not listed
        ({"url": "https://no-such-host.invalid/x"}, "does not resolve"),
        ({"url": "https://[::ffff:10.0.0.1]/x"}, "private"),
        ({"url": "https://user:pw@127.0.0.1/x"}, "user info"),
        ({"url": "not a url"}, "https://"),
        ({"url": ""}, "url"),
        ({}, "url"),
        ({"url": "https://127.0.0.1/x", "symbol": "???"}, "symbol"),
        ({"url": "https://127.0.0.1/x", "timeframe": "7m"}, "timeframe"),
        ({"url": "https://127.0.0.1/x", "colour": "red"}, "colour"),
        ([1, 2], "object"),
    ],
)
async def test_bad_urls_and_filters_are_400(stack: Stack, keys: Callable[[], str], body: Any, says: str) -> None:
    key = keys()
    response = stack.call("POST", "/public/v1/webhooks", key, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and says in error["message"] and error["request_id"]
    assert stack.call("GET", "/public/v1/webhooks", key).json()["data"] == []


async def test_the_per_key_cap_and_410_disables(stack: Stack, keys: Callable[[], str]) -> None:
    key = keys()
    created = [stack.create(key, "/gone", symbol="HOOKF-USD")]
    created += [stack.create(key, f"/spare{i}", symbol="HOOKZ-USD") for i in range(MAX_ENDPOINTS - 1)]
    response = stack.call("POST", "/public/v1/webhooks", key, json={"url": stack.hooks.url("/more")})
    assert response.status_code == 403 and str(MAX_ENDPOINTS) in response.json()["error"]["message"]
    stack.hooks.plans["/gone"] = [410]
    await stack.alert("HOOKF-USD", 1)
    await stack.alert("HOOKF-USD", 2)
    gone = created[0]["id"]
    await until(lambda: [d["status"] for d in stack.log(key, gone)] == ["failed", "failed"], "the endpoint disabled")
    [hook] = [w for w in stack.call("GET", "/public/v1/webhooks", key).json()["data"] if w["id"] == gone]
    assert hook["enabled"] is False and "410" in hook["disabled_reason"]
    assert len(stack.hooks.at("/gone")) == 1  # the second event was never sent
    await stack.alert("HOOKF-USD", 3)  # a disabled endpoint gets no more deliveries
    assert len(stack.log(key, gone)) == 2


async def test_a_slow_endpoint_is_cut_at_the_timeout_and_does_not_hold_the_others(
    stack: Stack, keys: Callable[[], str]
) -> None:
    key = keys()
    slow = stack.create(key, "/slow", symbol="HOOKG-USD")
    fast = stack.create(key, "/fast", symbol="HOOKG-USD")
    stack.hooks.delays["/slow"] = 3.0
    await stack.alert("HOOKG-USD", 1)
    await until(lambda: len(stack.hooks.at("/fast")) == 1, "the fast endpoint's delivery")
    await until(lambda: stack.log(key, slow["id"])[0]["attempts"] >= 1, "the slow attempt recorded")
    [attempt] = stack.log(key, slow["id"])
    assert attempt["status"] == "pending" and "no answer within 1 s" in attempt["last_error"]
    assert attempt["last_status_code"] is None
    stack.hooks.delays["/slow"] = 0.0
    await until(lambda: stack.log(key, slow["id"])[0]["status"] == "delivered", "the retry")
    assert stack.log(key, fast["id"])[0]["status"] == "delivered"


async def test_redirects_are_not_followed_and_answers_are_read_bounded(stack: Stack, keys: Callable[[], str]) -> None:
    key = keys()
    created = stack.create(key, "/moved", symbol="HOOKI-USD")
    stack.hooks.plans["/moved"] = [307] + [500] * 1000
    stack.hooks.bodies["/moved"] = b"x" * (4 << 20)  # 4 MiB answers
    await stack.alert("HOOKI-USD", 1)
    await until(lambda: stack.log(key, created["id"])[0]["last_status_code"] == 500, "a refused attempt")
    assert stack.hooks.at("/redirected") == []  # the 307 was a failed attempt, not followed
    [refused] = stack.log(key, created["id"])
    assert refused["status"] == "pending" and refused["attempts"] >= 2
    # a bounded excerpt of the 4 MiB answer is logged (the worker reads at most 1 KiB of it)
    assert refused["last_error"].startswith("HTTP 500: xxx") and len(refused["last_error"]) <= 1100
    stack.hooks.plans["/moved"] = []
    await until(lambda: stack.log(key, created["id"])[0]["status"] == "delivered", "the delivery")
    assert stack.hooks.at("/redirected") == []


def test_openapi_declares_the_webhook_routes_and_the_answers_match_it(stack: Stack, keys: Callable[[], str]) -> None:
    document = httpx.get(f"http://{stack.rest.addr}/public/v1/openapi.json", timeout=10).json()
    paths = document["paths"]
    assert {"post", "get"} <= set(paths["/public/v1/webhooks"])
    assert "delete" in paths["/public/v1/webhooks/{id}"]
    assert "get" in paths["/public/v1/webhooks/{id}/deliveries"]
    assert "post" in paths["/public/v1/webhooks/{id}/test"]
    assert {"Webhook", "WebhookDelivery"} <= set(document["components"]["schemas"])
    assert "key_id" not in document["components"]["schemas"]["Webhook"]["properties"]

    def check(path: str, method: str, response: httpx.Response) -> None:
        declared = paths[path][method]["responses"][str(response.status_code)]
        schema = {**declared["content"]["application/json"]["schema"], "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(response.json())

    key = keys()
    created = stack.call("POST", "/public/v1/webhooks", key, json={"url": stack.hooks.url("/doc"), "symbol": QUIET})
    check("/public/v1/webhooks", "post", created)
    webhook_id = created.json()["data"]["id"]
    check("/public/v1/webhooks", "get", stack.call("GET", "/public/v1/webhooks", key))
    check("/public/v1/webhooks/{id}/test", "post", stack.call("POST", f"/public/v1/webhooks/{webhook_id}/test", key))
    log = stack.call("GET", f"/public/v1/webhooks/{webhook_id}/deliveries", key)
    check("/public/v1/webhooks/{id}/deliveries", "get", log)
    bad = stack.call("POST", "/public/v1/webhooks", key, json={"url": "http://10.0.0.1/"})
    check("/public/v1/webhooks", "post", bad)
    check("/public/v1/webhooks/{id}", "delete", stack.call("DELETE", "/public/v1/webhooks/wh_nope", key))
