"""Bulk export through the real gateway and core over PostgreSQL (issue 21, deliverable 1).

A month of 1m candles and a day of ticks (two sources, one a second each) are written into a private
database; each export comes back whole in one request, in order, with the public fields only, as NDJSON
and as CSV. The gateway's memory does not follow the range, a client that leaves mid-stream frees the
core's cursor and connection (``pg_stat_activity``), a free key's daily row budget is enforced with the
``X-RateLimit-*`` headers, bad parameters are 400 before any byte, and a core lost mid-stream ends the
body with an error line.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from core.adapters.postgres import HEAVY_POOL
from tests.support.market_seed import Seed
from tests.support.processes import running_core, running_gateway
from tests.support.rest_stack import RestStack, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed(exchange="exportx", exchange_id=702_001, symbol_id=702_002, symbol="EXP-USD")
MINUTE_MS = 60_000
DAY_MS = 86_400_000
MONTH_START = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp() * 1000)
MONTH_END = MONTH_START + 30 * DAY_MS
MONTH_CANDLES = 30 * 1440
TICK_DAY = MONTH_START + DAY_MS  # 2026-10-02
TICKS_PER_SOURCE = 86_400  # one a second
SEQUENCE_BASE = 9_123_400_000  # internal: never in an answer
WORKER = "export-worker-canary"
FREE_BUDGET = 50_000  # rows per day: one month of minutes fits, a second does not
CANDLE_COLUMNS = ["exchange", "symbol", "timeframe", "timestamp", "open", "high", "low", "close", "volume"]
TICK_COLUMNS = ["symbol", "price", "volume", "source", "timestamp", "bid", "ask", "exchange_timestamp"]
HEAVY_POOL_SIZE = 2


def iso(ms: int) -> str:
    text = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


async def _seed_history(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO candles (exchange_id, symbol, timeframe, open_time, open, high, low, close, volume,"
            " is_synthetic, sequence_num)"
            " SELECT $1, $2, '1m', to_timestamp(($3::bigint + i::bigint * 60000) / 1000.0),"
            " round(100 + (i % 1000) / 100.0, 2),"
            " round(101 + (i % 1000) / 100.0, 2), round(99 + (i % 1000) / 100.0, 2),"
            " round(100.5 + (i % 1000) / 100.0, 2), (i % 7) + 0.25,"
            " i % 2 = 0, $4::bigint + i FROM generate_series(0, $5::int - 1) AS i",
            SEED.exchange_id,
            SEED.symbol,
            MONTH_START,
            SEQUENCE_BASE,
            MONTH_CANDLES,
        )
        await conn.execute(
            "INSERT INTO price_feeds (symbol, price, volume, source, ts, bid, ask, worker_id)"
            " SELECT $1, round(200 + (i % 500) / 100.0, 2), (i % 3) + 0.5, s,"
            " to_timestamp(($2::bigint + i::bigint * 1000) / 1000.0),"
            " CASE WHEN s = 'exa' THEN 199 END, CASE WHEN s = 'exa' THEN 201 END, $4"
            " FROM generate_series(0, $3::int - 1) AS i, unnest(ARRAY['exa', 'exb']) AS s",
            SEED.symbol,
            TICK_DAY,
            TICKS_PER_SOURCE,
            WORKER,
        )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(
        base_env,
        admin_database_url,
        SEED,
        PERSEUS_EXPORT_ROWS_PER_DAY_FREE=str(FREE_BUDGET),
        PERSEUS_DATABASE_HEAVY_POOL_SIZE=str(HEAVY_POOL_SIZE),
        PERSEUS_HEAVY_READS_PER_KEY=str(HEAVY_POOL_SIZE),
    ) as stack:
        asyncio.run(_seed_history(stack.env["PERSEUS_DATABASE_URL"]))
        yield stack


def export(stack: RestStack, path: str, *, tier: str = "pro", **params: Any) -> httpx.Response:
    url = f"http://{stack.rest.addr}/public/v1/export/{path}"
    return httpx.get(url, params=params, headers={"X-API-Key": stack.keys[tier]}, timeout=120)


def ndjson(response: httpx.Response) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    return lines[:-1], lines[-1]


def test_a_month_of_minutes_in_one_ndjson_request(stack: RestStack) -> None:
    response = export(
        stack, f"candles/{SEED.exchange}/{SEED.symbol}", timeframe="1m", start=MONTH_START, end=iso(MONTH_END)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers.get("transfer-encoding") == "chunked"
    assert 'filename="candles_exportx_EXP-USD_1m_' in response.headers["content-disposition"]
    rows, end = ndjson(response)
    assert end == {"type": "end", "rows": MONTH_CANDLES}
    assert len(rows) == MONTH_CANDLES
    assert [r["timestamp"] for r in rows[:2]] == [iso(MONTH_START), iso(MONTH_START + MINUTE_MS)]
    assert rows[-1]["timestamp"] == iso(MONTH_END - MINUTE_MS)
    times = [r["timestamp"] for r in rows]
    assert times == sorted(times) and len(set(times)) == MONTH_CANDLES
    assert all(list(r) == CANDLE_COLUMNS for r in rows)  # the public projection, nothing internal
    assert rows[1] == {
        "exchange": SEED.exchange,
        "symbol": SEED.symbol,
        "timeframe": "1m",
        "timestamp": iso(MONTH_START + MINUTE_MS),
        "open": "100.01",
        "high": "101.01",
        "low": "99.01",
        "close": "100.51",
        "volume": "1.25",
    }
    assert str(SEQUENCE_BASE + 1).encode() not in response.content and b"is_synthetic" not in response.content


def test_a_month_of_minutes_as_csv(stack: RestStack) -> None:
    response = export(
        stack, f"candles/{SEED.exchange}/{SEED.symbol}", timeframe="1m", start=MONTH_START, end=MONTH_END, format="csv"
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].endswith('.csv"')
    text = response.text
    assert text.endswith(f"# end rows={MONTH_CANDLES}\r\n")
    records = list(csv.reader(io.StringIO(text.removesuffix(f"# end rows={MONTH_CANDLES}\r\n"))))
    assert records[0] == CANDLE_COLUMNS
    assert len(records) == 1 + MONTH_CANDLES
    assert records[1] == [
        SEED.exchange,
        SEED.symbol,
        "1m",
        iso(MONTH_START),
        "100.00",
        "101.00",
        "99.00",
        "100.50",
        "0.25",
    ]
    assert [r[3] for r in records[1:]] == sorted(r[3] for r in records[1:])


def test_a_day_of_ticks_of_every_source_and_of_one(stack: RestStack) -> None:
    response = export(stack, "ticks", symbol="exp/usd", start=TICK_DAY, end=TICK_DAY + DAY_MS)
    assert response.status_code == 200, response.text
    rows, end = ndjson(response)
    assert end == {"type": "end", "rows": 2 * TICKS_PER_SOURCE} and len(rows) == 2 * TICKS_PER_SOURCE
    assert all(list(r) == TICK_COLUMNS for r in rows)
    assert rows[0]["timestamp"] <= rows[-1]["timestamp"] and rows[-1]["timestamp"] == iso(TICK_DAY + DAY_MS - 1000)
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    first = next(r for r in rows if r["source"] == "exa")
    assert first == {
        "symbol": SEED.symbol,
        "price": "200.00",
        "volume": "0.5",
        "source": "exa",
        "timestamp": iso(TICK_DAY),
        "bid": "199",
        "ask": "201",
        "exchange_timestamp": None,
    }
    assert WORKER.encode() not in response.content
    one = export(stack, "ticks", symbol=SEED.symbol, source="exb", start=TICK_DAY, end=TICK_DAY + DAY_MS, format="csv")
    records = list(csv.reader(io.StringIO(one.text)))
    assert records[0] == TICK_COLUMNS and records[-1] == [f"# end rows={TICKS_PER_SOURCE}"]
    assert len(records) == 2 + TICKS_PER_SOURCE and {r[3] for r in records[1:-1]} == {"exb"}
    assert records[1][5:7] == ["", ""]  # no bid/ask: empty fields


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_the_gateways_memory_does_not_follow_the_range(stack: RestStack) -> None:
    """An hour of ticks, then the whole day (over 25 MB of NDJSON) twice: the gateway's RSS grows by far less
    than one day's body, which a gateway that held the answer (or fell behind the core) would need."""
    hour = export(stack, "ticks", symbol=SEED.symbol, start=TICK_DAY, end=TICK_DAY + 3_600_000)
    assert hour.status_code == 200
    small = rss_kib(stack.rest.pid)
    sizes = []
    for _ in range(2):
        with httpx.stream(
            "GET",
            f"http://{stack.rest.addr}/public/v1/export/ticks",
            params={"symbol": SEED.symbol, "start": TICK_DAY, "end": TICK_DAY + DAY_MS},
            headers={"X-API-Key": stack.keys["pro"]},
            timeout=120,
        ) as response:
            sizes.append(sum(len(chunk) for chunk in response.iter_bytes()))
    large = rss_kib(stack.rest.pid)
    assert min(sizes) > 25 * 1024 * 1024
    assert large - small < 16 * 1024, f"RSS grew {large - small} KiB exporting {sizes[0]} bytes"


async def _heavy_connections(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT state FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
            HEAVY_POOL,
        )
        return [row["state"] for row in rows]
    finally:
        await conn.close()


def wait_for(check: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(what)


def test_a_client_leaving_mid_stream_frees_the_cursor_and_the_connection(stack: RestStack) -> None:
    url = stack.env["PERSEUS_DATABASE_URL"]
    for attempt in range(HEAVY_POOL_SIZE + 1):  # more than the pool: a connection kept by a gone client would block
        with httpx.stream(
            "GET",
            f"http://{stack.rest.addr}/public/v1/export/ticks",
            params={"symbol": SEED.symbol, "start": TICK_DAY, "end": TICK_DAY + DAY_MS},
            headers={"X-API-Key": stack.keys["pro"]},
            timeout=30,
        ) as response:
            assert response.status_code == 200
            chunks = response.iter_raw()  # kept: a dropped iterator closes the response
            next(chunks)  # the first bytes, then the client stops reading
            # the core is held by the client's pace: its cursor's transaction is open
            wait_for(
                lambda: "idle in transaction" in asyncio.run(_heavy_connections(url)),
                f"no open export transaction while the client holds the stream (attempt {attempt})",
            )
        # the client went away: the transaction (and cursor) is closed, the connection back in the pool
        wait_for(
            lambda: all(state == "idle" for state in asyncio.run(_heavy_connections(url))),
            f"the export's connection stayed busy: {asyncio.run(_heavy_connections(url))}",
        )
    after = export(stack, "ticks", symbol=SEED.symbol, start=TICK_DAY, end=TICK_DAY + 60_000)
    assert after.status_code == 200 and ndjson(after)[1] == {"type": "end", "rows": 120}


def test_a_free_key_over_its_daily_row_budget_is_refused(stack: RestStack) -> None:
    path = f"candles/{SEED.exchange}/{SEED.symbol}"
    first = export(stack, path, tier="free", timeframe="1m", start=MONTH_START, end=MONTH_END)
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == str(FREE_BUDGET)
    assert first.headers["X-RateLimit-Remaining"] == str(FREE_BUDGET - MONTH_CANDLES)
    midnight = (int(time.time()) // 86_400 + 1) * 86_400
    assert first.headers["X-RateLimit-Reset"] == str(midnight)
    second = export(stack, path, tier="free", timeframe="1m", start=MONTH_START, end=MONTH_END)
    assert second.status_code == 429, second.text
    body = second.json()
    assert body["error"]["code"] == "RATE_LIMIT_EXCEEDED" and "rows" in body["error"]["message"]
    assert second.headers["X-RateLimit-Remaining"] == str(FREE_BUDGET - MONTH_CANDLES)
    assert int(second.headers["Retry-After"]) >= 1
    # a range with fewer candles than it spans is charged the rows sent: a week of 1h has 0 stored
    hours = export(stack, path, tier="free", timeframe="1h", start=MONTH_START, end=MONTH_START + 7 * DAY_MS)
    assert hours.status_code == 200 and ndjson(hours)[1] == {"type": "end", "rows": 0}
    again = export(stack, path, tier="free", timeframe="1d", start=MONTH_START, end=MONTH_START + DAY_MS)
    assert again.headers["X-RateLimit-Remaining"] == str(FREE_BUDGET - MONTH_CANDLES - 1)
    # ticks: a free key may send what is left, then the body ends with an error line
    ticks = export(stack, "ticks", tier="free", symbol=SEED.symbol, start=TICK_DAY, end=TICK_DAY + DAY_MS)
    assert ticks.status_code == 200
    rows, last = ndjson(ticks)
    left = FREE_BUDGET - MONTH_CANDLES
    assert len(rows) == left and last["type"] == "error" and last["rows"] == left
    assert last["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    refused = export(stack, "ticks", tier="free", symbol=SEED.symbol, start=TICK_DAY, end=TICK_DAY + 60_000)
    assert refused.status_code == 429 and refused.headers["X-RateLimit-Remaining"] == "0"


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("candles/exportx/EXP-USD", {"start": MONTH_END, "end": MONTH_START}, "end"),  # reversed
        ("candles/exportx/EXP-USD", {"start": MONTH_START, "end": MONTH_START}, "end"),  # empty
        ("candles/exportx/EXP-USD", {"start": 0, "end": MONTH_END * 10}, "start"),  # over the cap
        ("candles/exportx/EXP-USD", {"end": MONTH_END}, "start"),  # missing
        ("candles/exportx/EXP-USD", {"start": MONTH_START, "end": MONTH_END, "format": "xml"}, "format"),
        ("candles/exportx/EXP-USD", {"start": MONTH_START, "end": MONTH_END, "timeframe": "2m"}, "timeframe"),
        ("ticks", {"symbol": "EXP-USD", "start": TICK_DAY, "end": TICK_DAY + 8 * DAY_MS}, "start"),
        ("ticks", {"start": TICK_DAY, "end": TICK_DAY + DAY_MS}, "symbol"),
        ("ticks", {"symbol": "EXP-USD", "start": "yesterday", "end": TICK_DAY}, "start"),
    ],
)
def test_bad_parameters_are_400_before_any_byte(
    stack: RestStack, path: str, params: dict[str, Any], field: str
) -> None:
    response = export(stack, path, **params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == field


def test_an_unknown_pair_is_404(stack: RestStack) -> None:
    response = export(stack, f"candles/{SEED.exchange}/NONE-USD", start=MONTH_START, end=MONTH_END)
    assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"


def test_a_core_lost_mid_stream_ends_the_body_with_an_error_line(stack: RestStack) -> None:
    with running_core(stack.env) as core, running_gateway("rest", stack.env, core.addr) as rest:
        with httpx.stream(
            "GET",
            f"http://{rest.addr}/public/v1/export/ticks",
            params={"symbol": SEED.symbol, "start": TICK_DAY, "end": TICK_DAY + DAY_MS, "format": "ndjson"},
            headers={"X-API-Key": stack.keys["pro"]},
            timeout=60,
        ) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()
            body = next(chunks)
            os.kill(core.pid, signal.SIGKILL)
            body += b"".join(chunks)
        lines = body.splitlines()
        last = orjson.loads(lines[-1])
        assert last["type"] == "error" and last["error"]["code"] == "SERVICE_UNAVAILABLE", last
        assert last["rows"] == len(lines) - 1 < 2 * TICKS_PER_SOURCE


def test_the_sdk_iterates_an_export(stack: RestStack) -> None:
    from decimal import Decimal

    from perseus_sdk import ApiError, RestClient

    async def run() -> tuple[int, Any, Any, int, ApiError | None]:
        async with RestClient(f"http://{stack.rest.addr}", stack.keys["pro"]) as rest:
            count, first, last = 0, None, None
            async for candle in rest.export_candles(SEED.exchange, SEED.symbol, start=MONTH_START, end=MONTH_END):
                first = first or candle
                last, count = candle, count + 1
            ticks = [
                t async for t in rest.export_ticks(SEED.symbol, start=TICK_DAY, end=TICK_DAY + 60_000, source="exa")
            ]
            refused = None
            try:
                async for _ in rest.export_ticks(SEED.symbol, start=TICK_DAY + DAY_MS, end=TICK_DAY):
                    pass
            except ApiError as exc:
                refused = exc
            return count, first, last, len(ticks) + 1000 * int(ticks[0].bid == Decimal("199")), refused

    count, first, last, ticks, refused = asyncio.run(run())
    assert count == MONTH_CANDLES
    assert first.timestamp == datetime.fromtimestamp(MONTH_START / 1000, UTC)
    assert last.timestamp == datetime.fromtimestamp((MONTH_END - MINUTE_MS) / 1000, UTC)
    assert ticks == 1060
    assert refused is not None and refused.status == 400 and refused.code == "VALIDATION_ERROR"


async def _terminate_export_backends(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return len(
            await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1"
                " AND datname = current_database() AND state = 'idle in transaction'",
                HEAVY_POOL,
            )
        )
    finally:
        await conn.close()


def test_postgresql_lost_mid_export_ends_the_body_with_an_error_line(stack: RestStack) -> None:
    url = stack.env["PERSEUS_DATABASE_URL"]
    for fmt in ("ndjson", "csv"):
        with httpx.stream(
            "GET",
            f"http://{stack.rest.addr}/public/v1/export/ticks",
            params={"symbol": SEED.symbol, "start": TICK_DAY, "end": TICK_DAY + DAY_MS, "format": fmt},
            headers={"X-API-Key": stack.keys["pro"]},
            timeout=60,
        ) as response:
            assert response.status_code == 200
            chunks = response.iter_raw()
            body = next(chunks)
            wait_for(lambda: asyncio.run(_terminate_export_backends(url)) == 1, "no export transaction to end")
            body += b"".join(chunks)
        lines = body.splitlines()
        if fmt == "ndjson":
            last = orjson.loads(lines[-1])
            assert last["type"] == "error" and last["error"]["code"] == "SERVICE_UNAVAILABLE", last
            assert last["rows"] == len(lines) - 1 < 2 * TICKS_PER_SOURCE
        else:
            assert lines[-1].startswith(b"# error SERVICE_UNAVAILABLE: "), lines[-1]
            assert 1 < len(lines) - 2 < 2 * TICKS_PER_SOURCE
    after = export(stack, "ticks", symbol=SEED.symbol, start=TICK_DAY, end=TICK_DAY + 60_000)
    assert after.status_code == 200 and ndjson(after)[1] == {"type": "end", "rows": 120}


def test_a_key_has_at_most_its_heavy_reads_in_flight(stack: RestStack) -> None:
    """Exports hold one of the key's PERSEUS_HEAVY_READS_PER_KEY slots (each holds a core connection)."""
    with ExitStack() as held:
        for _ in range(HEAVY_POOL_SIZE):
            response = held.enter_context(
                httpx.stream(
                    "GET",
                    f"http://{stack.rest.addr}/public/v1/export/ticks",
                    params={"symbol": SEED.symbol, "start": TICK_DAY, "end": TICK_DAY + DAY_MS},
                    headers={"X-API-Key": stack.keys["pro"]},
                    timeout=30,
                )
            )
            assert response.status_code == 200
        refused = export(stack, "ticks", symbol=SEED.symbol, start=TICK_DAY, end=TICK_DAY + 60_000)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert "2 heavy reads (price ranges, exports) at once" in refused.json()["error"]["message"]
    after = export(stack, "ticks", symbol=SEED.symbol, start=TICK_DAY, end=TICK_DAY + 60_000)
    assert after.status_code == 200 and ndjson(after)[1] == {"type": "end", "rows": 120}
