"""OpenTelemetry traces across processes (issue 19): a real ``perseus rest`` and ``perseus core`` exporting over
OTLP/HTTP to a real receiver on loopback (tests/support/otlp.py), which decodes what they send."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.market_seed import Seed
from tests.support.otlp import CLIENT, SERVER, Link, ReceivedSpan, Receiver, otlp_receiver
from tests.support.processes import Process, free_port, running_core, running_gateway, spawn, wait_until
from tests.support.rest_stack import RestStack, make_key, seeded_rest_stack
from tests.support.ws import register_symbols

pytestmark = pytest.mark.integration

SEED = Seed()
CANDLES = f"/public/v1/candles/{SEED.exchange}/{SEED.symbol}"
CANDLES_ROUTE = "GET /public/v1/candles/<exchange:str>/<symbol:str>"  # the route, as /metrics labels it
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100", "PERSEUS_LOG_LEVEL": "DEBUG"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str, receiver: Receiver) -> Iterator[RestStack]:
    # the core logs JSON, the gateway text: both formats carry the ids
    env = {**base_env, **FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "PERSEUS_LOG_FORMAT": "json"}
    with seeded_rest_stack(env, admin_database_url, SEED, PERSEUS_LOG_FORMAT="text") as stack:
        yield stack


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1)) + ".000Z"


def request_span(receiver: Receiver, request_id: str) -> ReceivedSpan:
    """The REST gateway's server span of the request sent with ``X-Request-ID: request_id``."""

    def found(spans: list[ReceivedSpan]) -> bool:
        return any(s.attributes.get("perseus.request_id") == request_id for s in spans)

    spans = receiver.wait_for(found, f"span of request {request_id}")
    return next(s for s in spans if s.attributes.get("perseus.request_id") == request_id)


def get(stack: RestStack, path: str, **headers: str | bytes) -> tuple[httpx.Response, str]:
    request_id = uuid.uuid4().hex
    response = stack.get(path, headers={"X-Request-ID": request_id, **headers})
    return response, request_id


def test_one_rest_request_is_one_trace_across_gateway_and_core(stack: RestStack, receiver: Receiver) -> None:
    response, request_id = get(stack, CANDLES)
    assert response.status_code == 200, response.text
    try:
        rest = request_span(receiver, request_id)
    except AssertionError:
        print("REST", stack.rest.output()[-3000:])
        print("CORE", stack.core.output()[-3000:])
        raise
    assert (rest.service, rest.name, rest.kind) == ("perseus-rest", CANDLES_ROUTE, SERVER)
    assert rest.parent_span_id == ""  # no traceparent came: a new trace
    assert rest.attributes["http.response.status_code"] == 200

    def core_call(spans: list[ReceivedSpan]) -> bool:
        return any(s.name.endswith("/GetCandles") and s.trace_id == rest.trace_id for s in spans)

    try:
        spans = receiver.wait_for(core_call, "core span of GetCandles in the request's trace")
    except AssertionError:
        print("CORE", stack.core.output()[-6000:])
        raise
    core = next(s for s in spans if s.name.endswith("/GetCandles") and s.trace_id == rest.trace_id)
    assert core.service == "perseus-core" and core.kind == SERVER
    assert core.name == "perseus.marketdata.v1.MarketDataService/GetCandles"
    assert core.parent_span_id == rest.span_id  # the gateway's span, through the gRPC metadata
    assert core.attributes["rpc.grpc.status_code"] == 0

    def store_work(spans: list[ReceivedSpan]) -> bool:
        return any(s.parent_span_id == core.span_id and s.kind == CLIENT for s in spans)

    spans = receiver.wait_for(store_work, "Redis or PostgreSQL spans under the core's span")
    children = [s for s in spans if s.parent_span_id == core.span_id]
    assert all(s.service == "perseus-core" and s.trace_id == rest.trace_id for s in children)
    systems = {s.attributes.get("db.system") or s.attributes.get("db.system.name") for s in children}
    assert systems & {"postgresql", "redis"}, [(s.name, s.attributes) for s in children]
    # one trace: every span of the request's trace comes from the gateway or the core
    assert {s.service for s in receiver.snapshot() if s.trace_id == rest.trace_id} == {"perseus-rest", "perseus-core"}


def test_a_valid_traceparent_is_continued(stack: RestStack, receiver: Receiver) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    # a query of its own: the gateway's candle cache would answer a repeated one without the core
    response, request_id = get(stack, f"{CANDLES}?limit=5", traceparent=f"00-{trace_id}-{parent_id}-01")
    assert response.status_code == 200, response.text
    rest = request_span(receiver, request_id)
    assert (rest.trace_id, rest.parent_span_id) == (trace_id, parent_id)
    spans = receiver.wait_for(
        lambda spans: any(s.service == "perseus-core" and s.trace_id == trace_id for s in spans), "core span"
    )
    assert any(s.parent_span_id == rest.span_id for s in spans if s.service == "perseus-core")


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # an all-zero trace id is invalid
        "00-xyz-abc-01",
        "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",  # version ff is forbidden
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01-" + "x" * 5000,
        "\u00e9t\u00e9".encode("latin-1"),  # not ASCII
        b"00-\xff\xfe",
    ],
)
def test_a_malformed_traceparent_is_ignored(stack: RestStack, receiver: Receiver, traceparent: str | bytes) -> None:
    response, request_id = get(stack, CANDLES, traceparent=traceparent)
    assert response.status_code == 200, response.text
    rest = request_span(receiver, request_id)
    assert rest.parent_span_id == "" and rest.trace_id != "0" * 32  # a new trace
    assert rest.trace_id.encode() not in (traceparent if isinstance(traceparent, bytes) else traceparent.encode())


def test_log_lines_carry_the_trace_and_span_ids(stack: RestStack, receiver: Receiver) -> None:
    response, request_id = get(stack, f"{CANDLES}?limit=7")
    assert response.status_code == 200
    rest = request_span(receiver, request_id)
    spans = receiver.wait_for(
        lambda spans: any(s.service == "perseus-core" and s.trace_id == rest.trace_id for s in spans), "core span"
    )
    core_ids = {s.span_id for s in spans if s.service == "perseus-core" and s.kind == SERVER}
    # the core (JSON): its "rpc finished" lines (DEBUG) of the request's calls, written inside their spans
    entries = [json.loads(line) for line in stack.core.output().splitlines() if line.startswith("{")]
    mine = [e for e in entries if e.get("trace_id") == rest.trace_id]
    assert any(e["message"] == "rpc finished" for e in mine), stack.core.output()[-3000:]
    assert {e["span_id"] for e in mine} <= core_ids | {s.span_id for s in spans if s.trace_id == rest.trace_id}
    # the gateway (text): its lines written while serving the request carry its span's ids
    lines = [line for line in stack.rest.output().splitlines() if f"request_id={request_id}" in line]
    assert lines and all(f"trace_id={rest.trace_id} span_id={rest.span_id}" in line for line in lines), lines


def test_error_answers_end_their_spans_too(stack: RestStack, receiver: Receiver) -> None:
    for path, status in (("/public/v1/nowhere", 404), (f"{CANDLES}?timeframe=7x", 400), (CANDLES, 401)):
        headers = {"X-API-Key": "pk_bad"} if status == 401 else {}
        response, request_id = get(stack, path, **headers)
        assert response.status_code == status, response.text
        span = request_span(receiver, request_id)
        assert span.attributes["http.response.status_code"] == status
        if status == 404:
            assert span.name == "GET"  # no route matched: no name of its own
    assert "Failed to detach context" not in stack.rest.output()


def test_probes_and_scrapes_make_no_spans(stack: RestStack, receiver: Receiver) -> None:
    probes = []
    for path in ("/health", "/livez", "/readyz", "/metrics"):
        response, request_id = get(stack, path)
        assert response.status_code == 200, response.text
        probes.append(request_id)
    response, last = get(stack, f"{CANDLES}?limit=3")  # spans are exported in order: once this one is in, ...
    request_span(receiver, last)
    traced = {s.attributes.get("perseus.request_id") for s in receiver.snapshot()}
    assert traced.isdisjoint(probes)  # ... the probes' would be too


def test_the_metrics_say_what_the_export_lost(stack: RestStack) -> None:
    text = httpx.get(f"http://{stack.rest.addr}/metrics", timeout=5).text
    assert "perseus_trace_spans_dropped_total 0.0" in text
    assert "perseus_trace_export_failed_spans_total 0.0" in text


def test_an_unreachable_collector_never_fails_a_request(base_env: dict[str, str], admin_database_url: str) -> None:
    closed = free_port()  # nothing listens there: every export is refused
    env = {
        **base_env,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{closed}/v1/traces",
        "OTEL_BSP_MAX_QUEUE_SIZE": "8",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    seed = Seed(exchange="seedt", exchange_id=700_901, symbol_id=700_902)
    with seeded_rest_stack(env, admin_database_url, seed) as dead:
        path = f"/public/v1/candles/{seed.exchange}/{seed.symbol}"
        with httpx.Client(headers={"X-API-Key": dead.keys["pro"]}, timeout=10) as client:
            statuses = [client.get(f"http://{dead.rest.addr}{path}").status_code for _ in range(60)]
            assert statuses == [200] * 60
            health = client.get(f"http://{dead.rest.addr}/health")
            assert health.status_code == 200, health.text
            metrics = client.get(f"http://{dead.rest.addr}/metrics").text
        counters = dict(re.findall(r"^(perseus_trace_\w+_total) (\S+)$", metrics, re.M))
        lost = float(counters["perseus_trace_spans_dropped_total"]) + float(
            counters["perseus_trace_export_failed_spans_total"]
        )
        assert lost > 0, counters
        assert float(counters["perseus_trace_spans_dropped_total"]) > 0, counters  # the queue of 8 overflowed


# --- WebSocket: a subscribe's span; ingest -> publish -> delivery joined by links ---------------------------


@pytest.fixture(scope="module")
def live_stack(migrated_env: dict[str, str], receiver: Receiver) -> Iterator[tuple[Process, Process, Process]]:
    """A core that ingests (its default mode), a REST and a WS gateway, all exporting to the receiver."""
    env = {**migrated_env, **FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    with (
        running_core(env) as core,
        running_gateway("rest", env, core.addr) as rest,
        running_gateway("ws", env, core.addr) as ws,
    ):
        yield core, rest, ws


async def next_event(ws: ClientConnection) -> str:
    """The next frame that is not a heartbeat, as the client got it (text)."""
    async with asyncio.timeout(10):
        while True:
            frame = await ws.recv()
            assert isinstance(frame, str)
            if json.loads(frame)["type"] != "heartbeat":
                return frame


async def test_ingest_publish_and_ws_delivery_are_linked(
    live_stack: tuple[Process, Process, Process], migrated_env: dict[str, str], receiver: Receiver
) -> None:
    _, rest, gateway = live_stack
    key = make_key(migrated_env, "internal")
    symbol = f"TRC{secrets.token_hex(3).upper()}-USD"
    register_symbols(migrated_env["PERSEUS_DATABASE_URL"], [symbol], exchange="binance")
    channel = f"prices:binance:{symbol}"
    handshake_trace, handshake_parent = secrets.token_hex(16), secrets.token_hex(8)
    headers = {"X-API-Key": key, "traceparent": f"00-{handshake_trace}-{handshake_parent}-01"}
    async with connect(f"ws://{gateway.addr}/public/v1/stream", open_timeout=10, additional_headers=headers) as ws:
        await ws.send(json.dumps({"action": "subscribe", "channels": [channel]}))
        assert json.loads(await next_event(ws)) == {"type": "subscribed", "channels": [channel]}
        request_id = uuid.uuid4().hex
        feed = {"symbol": symbol, "price": "12.5", "volume": "1", "source": "binance", "timestamp": now_iso()}
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                f"http://{rest.addr}/internal/v1/ingest",
                json={"feeds": [feed]},
                headers={"X-API-Key": key, "X-Request-ID": request_id},
            )
        assert response.status_code == 200 and response.json()["data"]["ingested"] == 1, response.text
        frame = await next_event(ws)
    event = json.loads(frame)
    assert event["type"] == "price_update" and event["data"]["price"] == "12.5"
    # the publish's trace context travels inside the core's events, never to a client
    assert set(event) == {"type", "channel", "seq", "data"} and "traceparent" not in frame
    assert "00-" not in json.dumps(event["data"])

    # the subscribe: a span of the WS gateway, continuing the handshake's traceparent
    spans = receiver.wait_for(
        lambda spans: any(s.name == "ws subscribe" and s.trace_id == handshake_trace for s in spans), "subscribe span"
    )
    subscribe = next(s for s in spans if s.name == "ws subscribe" and s.trace_id == handshake_trace)
    assert subscribe.service == "perseus-ws" and subscribe.parent_span_id == handshake_parent
    assert subscribe.attributes["perseus.channels"] == (channel,)

    # ingest: the REST request's trace holds the core's IngestPrices call
    rest_span = request_span(receiver, request_id)
    spans = receiver.wait_for(
        lambda spans: any(s.name.endswith("/IngestPrices") and s.trace_id == rest_span.trace_id for s in spans),
        "IngestPrices span",
    )
    ingest = next(s for s in spans if s.name.endswith("/IngestPrices") and s.trace_id == rest_span.trace_id)
    assert ingest.service == "perseus-core" and ingest.parent_span_id == rest_span.span_id
    # publish: the core's span that wrote the tick to Redis links to that call
    ingest_link = Link(ingest.trace_id, ingest.span_id)
    spans = receiver.wait_for(
        lambda spans: any(s.name == "publish prices" and ingest_link in s.links for s in spans), "publish span"
    )
    publish = next(s for s in spans if s.name == "publish prices" and ingest_link in s.links)
    assert publish.service == "perseus-core"
    # delivery: the WS gateway's span that fanned the event out links to the publish
    publish_link = Link(publish.trace_id, publish.span_id)
    spans = receiver.wait_for(
        lambda spans: any(s.name == "ws deliver" and publish_link in s.links for s in spans), "delivery span"
    )
    deliver = next(s for s in spans if s.name == "ws deliver" and publish_link in s.links)
    assert deliver.service == "perseus-ws" and deliver.attributes["perseus.channel"] == channel


# --- `perseus up`: its children inherit the OTEL environment; each names its own service --------------------


@pytest.mark.xdist_group("perseus_up")  # one real `perseus up` stack at a time (tests/integration/test_up.py)
@pytest.mark.timeout(240)
async def test_perseus_up_children_export_each_under_its_own_name(receiver: Receiver) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="perseus-up-traces-"))  # PostgreSQL runs as nobody: not under tmp_path
    ports = {name: free_port() for name in ("core", "rest", "ws")}
    env = {
        "PERSEUS_CORE_ADDR": f"127.0.0.1:{ports['core']}",
        "PERSEUS_REST_ADDR": f"127.0.0.1:{ports['rest']}",
        "PERSEUS_WS_ADDR": f"127.0.0.1:{ports['ws']}",
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_SIM_BACKFILL_MINUTES": "0",
        "PERSEUS_SIM_SYMBOLS": "BTC-USD",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "inherited-name",  # each process's own service.name wins over it
    }
    unset = ("PERSEUS_REDIS_URL", "PERSEUS_DATABASE_URL", "PERSEUS_REDIS_PREFIX")
    up = spawn(["up", "--data-dir", str(data_dir)], env, env["PERSEUS_REST_ADDR"], unset=unset)
    try:
        wait_until(lambda: "Ctrl-C to stop" in up.output(), up, "perseus up summary", timeout=90)
        key = next(word for line in up.output().splitlines() for word in line.split() if word.startswith("pk_int_"))
        request_id = uuid.uuid4().hex
        async with httpx.AsyncClient(timeout=10) as client:
            latest = await client.get(
                f"http://{env['PERSEUS_REST_ADDR']}/public/v1/prices/latest",
                params={"symbols": "BTC-USD"},
                headers={"X-Request-ID": request_id, "X-API-Key": key},
            )
        assert latest.status_code in (200, 404), latest.text  # the sim's first price may not be there yet
        url = f"ws://{env['PERSEUS_WS_ADDR']}/public/v1/stream"
        async with connect(url, open_timeout=10, additional_headers={"X-API-Key": key}) as ws:
            await ws.send(json.dumps({"action": "subscribe", "channels": ["prices:BTC-USD"]}))
            assert json.loads(await next_event(ws))["type"] == "subscribed"
        rest = request_span(receiver, request_id)
        assert rest.service == "perseus-rest"
        spans = receiver.wait_for(
            lambda spans: any(s.service == "perseus-core" and s.parent_span_id == rest.span_id for s in spans),
            "the core's span under `perseus up`",
        )
        spans = receiver.wait_for(
            lambda spans: any(s.service == "perseus-ws" and s.name == "ws subscribe" for s in spans), "WS span"
        )
        assert "inherited-name" not in {s.service for s in spans}
    finally:
        assert up.stop(timeout=60) == 0
        up.log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
