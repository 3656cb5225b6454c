"""Fuzzing the REST gateway's query parameters and path segments: never a 5xx, never a hang, bounded memory.

Hypothesis sends every public route of a real ``perseus rest`` (and core, over
seeded stores) query strings made of its declared parameters and others,
with values of every kind: empty, digits, huge, unicode, control
characters, ISO-8601 look-alikes with impossible dates or offsets, cursors
that are not, repeated parameters; and path segments that are not exchange or
symbol names. Every answer comes within the client timeout, is below 500,
and is either 200 with ``data`` or the documented error body whose
``request_id`` matches its header. Across the run the gateway's RSS stays
bounded. Examples are derandomized and bounded, so CI replays the same
requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from gateways.rest.app import OPERATIONS
from tests.support.market_seed import Seed
from tests.support.rest_stack import RestStack, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed(exchange="fzr", exchange_id=750_001, symbol_id=750_002, symbol="FZR-USD")
MAX_EXAMPLES = 300
TIMEOUT_S = 10.0  # a hang fails the request, so the test
ERROR_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMIT_EXCEEDED",
}
RSS_GROWTH_LIMIT = 64 * 1024 * 1024
PARAMETER_NAMES = sorted({param.name for op in OPERATIONS for param in op.params if param.where == "query"})


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(base_env, admin_database_url, SEED) as stack:
        yield stack


@pytest.fixture(scope="module")
def http(stack: RestStack) -> Iterator[httpx.Client]:
    headers = {"X-API-Key": stack.keys["internal"]}
    with httpx.Client(base_url=f"http://{stack.rest.addr}", headers=headers, timeout=TIMEOUT_S) as client:
        yield client


texts = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="ascii"), max_size=40),
    st.from_regex(r"-?[0-9]{1,25}", fullmatch=True),
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,12})?)?(Z|[+-][0-9]{2}:[0-9]{2})?",
        fullmatch=True,
    ),
    st.sampled_from(
        ["1m", "1H", "2h", "0", "-1", "1e309", "NaN", "null", "[]", "%00", "BTC/USD", "btc-usd", SEED.symbol]
    ),
    st.sampled_from([SEED.exchange, "SIM", "x" * 33, "a" * 5_000, "\u0130", "\x00", "../..", "é"]),
    st.text(min_size=200, max_size=3_000),
)
queries = st.lists(st.tuples(st.sampled_from(PARAMETER_NAMES) | st.text(max_size=12), texts), max_size=8)
segments = st.one_of(st.just(None), texts.filter(bool))


def path_of(template: str, exchange: str | None, symbol: str | None) -> str:
    exchange = SEED.exchange if exchange is None else quote(exchange, safe="")
    symbol = SEED.symbol if symbol is None else quote(symbol, safe="/")
    return template.replace("{exchange}", exchange).replace("{symbol}", symbol)


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.url, response.status_code, response.text[:500])
    body = response.json()
    if response.status_code == 200:
        assert "data" in body
        return
    error = body["error"]
    assert body["status"] == response.status_code and error["code"] == ERROR_CODES[response.status_code], body
    assert error["request_id"] == response.headers["x-request-id"] and isinstance(error["message"], str)
    assert "Traceback" not in error["message"] and "timedelta" not in error["message"], error


@settings(
    max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
@given(
    operation=st.sampled_from(OPERATIONS),
    query=queries,
    exchange=segments,
    symbol=segments,
)
@example(operation=OPERATIONS[0], query=[("x", "y" * 20_000)], exchange=None, symbol=None)
@example(operation=OPERATIONS[2], query=[("start", "2026-12-02T06:00:00+99:00")], exchange=None, symbol=None)
@example(operation=OPERATIONS[2], query=[("limit", "9" * 400)], exchange=None, symbol="A" * 3_000)
def test_no_query_or_path_makes_the_gateway_fail_or_hang(
    http: httpx.Client,
    operation: object,
    query: list[tuple[str, str]],
    exchange: str | None,
    symbol: str | None,
) -> None:
    template = operation.path  # type: ignore[attr-defined]
    response = http.get(path_of(template, exchange, symbol), params=query)
    check(response)


def test_memory_stays_bounded_under_junk_queries(stack: RestStack, http: httpx.Client) -> None:
    process = psutil.Process(stack.rest.proc.pid)
    before = process.memory_info().rss
    junk = "z" * 4_000
    for index in range(600):
        operation = OPERATIONS[index % len(OPERATIONS)]
        params = {name: f"{junk}{index}" for name in PARAMETER_NAMES[: index % 7]}
        check(http.get(path_of(operation.path, f"x{index}", f"Q{index}-USD"), params=params))
    assert process.memory_info().rss - before < RSS_GROWTH_LIMIT
    assert stack.rest.proc.poll() is None
