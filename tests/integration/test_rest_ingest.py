"""`POST /internal/v1/ingest` through the real REST gateway and core."""

from __future__ import annotations

import time

import asyncpg
import httpx
import pytest

from tests.support.processes import Process, run_cli, running_core, running_gateway

pytestmark = pytest.mark.integration


def make_key(env: dict[str, str], tier: str) -> str:
    result = run_cli(["keys", "create", "--tier", tier], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def admin_key(migrated_env: dict[str, str]) -> str:
    return make_key(migrated_env, "internal")


def post(rest: Process, body: object | bytes, key: str | None, *, bearer: bool = False) -> httpx.Response:
    headers = {}
    if key is not None:
        headers = {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    return httpx.post(f"http://{rest.addr}/internal/v1/ingest", headers=headers, timeout=5, **kwargs)


def now_iso(offset_s: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + offset_s)) + ".123Z"


async def test_a_seed_shaped_batch_is_ingested(rest: Process, admin_key: str, database_url: str) -> None:
    body = {
        "worker_id": "binance-worker-001",
        "feeds": [
            {
                "symbol": "RST/USD",
                "price": "67234.56",
                "volume": "1234.567890",
                "source": "binance",
                "timestamp": now_iso(-10),
                "metadata": {"bid": "67230.00", "ask": "67235.00", "exchange_timestamp": 1728480896123},
            },
            {"symbol": "RST-USD", "price": "bad", "volume": "1", "source": "binance", "timestamp": now_iso(-9)},
        ],
    }
    response = post(rest, body, admin_key)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data.pop("latency_ms") > 0
    assert data == {
        "status": "partial",
        "ingested": 1,
        "failed": 1,
        "errors": [{"index": 1, "field": "price", "reason": "is not a decimal number (got 'bad')"}],
        "message": "1 of 2 price feeds ingested; 1 failed (see errors)",
    }
    assert response.headers["x-request-id"]
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT symbol, price::text, bid::text, worker_id FROM price_feeds WHERE symbol = 'RST-USD'"
        )
    finally:
        await conn.close()
    assert tuple(row) == ("RST-USD", "67234.56", "67230.00", "binance-worker-001")


async def test_json_numbers_keep_every_digit(rest: Process, admin_key: str, database_url: str) -> None:
    raw = (
        b'{"feeds": [{"symbol": "NUM-USD", "price": 0.1000000000000000055511151231257827, "volume": 3,'
        b' "source": "kraken", "timestamp": "' + now_iso(-5).encode() + b'"}]}'
    )
    assert post(rest, raw, admin_key, bearer=True).json()["data"]["ingested"] == 1
    conn = await asyncpg.connect(database_url)
    try:
        price = await conn.fetchval("SELECT price::text FROM price_feeds WHERE symbol = 'NUM-USD'")
    finally:
        await conn.close()
    assert price == "0.1000000000000000055511151231257827"


async def test_trade_ids_tell_identical_trades_apart(rest: Process, admin_key: str, database_url: str) -> None:
    """A feed's ``trade_id`` (beside its fields or in ``metadata``, a string or an integer) is part of its
    identity: two trades alike in all else are both stored; the same trade id sent again is stored once."""
    symbol, ts = f"TID{int(time.time() * 1000) % 10**6}-USD", now_iso(-5)
    trade = {"symbol": symbol, "price": "10.5", "volume": "2", "source": "kraken", "timestamp": ts}
    first = post(rest, {"feeds": [{**trade, "trade_id": "A-1"}, {**trade, "metadata": {"trade_id": 7}}]}, admin_key)
    assert first.status_code == 200, first.text
    assert first.json()["data"]["ingested"] == 2
    again = post(rest, {"feeds": [{**trade, "trade_id": 7}, {**trade, "trade_id": "A-1"}, trade]}, admin_key)
    assert again.json()["data"]["ingested"] == 3  # accepted, the first two not stored again
    bad = post(rest, {"feeds": [{**trade, "trade_id": ["x"]}]}, admin_key)
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["field"] == "feeds[0].trade_id"
    long = post(rest, {"feeds": [trade, {**trade, "trade_id": "x" * 129}]}, admin_key).json()["data"]
    assert (long["ingested"], long["failed"]) == (1, 1)  # the core's check, by index, the good feed kept
    assert long["errors"] == [
        {"index": 1, "field": "trade_id", "reason": "must be printable text of at most 128 characters"}
    ]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT trade_id FROM price_feeds WHERE symbol = $1 ORDER BY trade_id", symbol)
    finally:
        await conn.close()
    assert [r["trade_id"] for r in rows] == ["", "7", "A-1"]


def test_keys_are_required_and_must_be_privileged(rest: Process, migrated_env: dict[str, str]) -> None:
    body = {"feeds": [{"symbol": "K-USD", "price": "1", "source": "sim", "timestamp": now_iso()}]}
    missing = post(rest, body, None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "UNAUTHORIZED"
    assert post(rest, body, "pk_pro_" + "x" * 43).status_code == 401
    free = post(rest, body, make_key(migrated_env, "free"))
    assert free.status_code == 403 and free.json()["error"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "VALIDATION_ERROR"),
        (b"[1, 2]", 400, "VALIDATION_ERROR"),
        (b'{"feeds": []}', 400, "VALIDATION_ERROR"),
        (b'{"feeds": [1]}', 400, "VALIDATION_ERROR"),
        (
            b'{"feeds": [{"symbol": "A-B", "price": "1", "source": "sim", "timestamp": "yesterday"}]}',
            400,
            "VALIDATION_ERROR",
        ),
        (b'{"feeds": [' + b",".join([b'{"symbol": "A-B"}'] * 101) + b"]}", 400, "VALIDATION_ERROR"),
        (b'{"feeds": "' + b"x" * 2_000_000 + b'"}', 413, "PAYLOAD_TOO_LARGE"),
    ],
)
def test_malformed_and_oversized_bodies(rest: Process, admin_key: str, body: bytes, status: int, code: str) -> None:
    response = post(rest, body, admin_key)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["request_id"] and "Traceback" not in response.text


def test_a_pw_host_core_refuses_ingest_clearly(migrated_env: dict[str, str], admin_key: str) -> None:
    with (
        running_core(migrated_env, PERSEUS_MODE="pw-host") as core,
        running_gateway("rest", migrated_env, core.addr) as gateway,
    ):
        body = {"feeds": [{"symbol": "PW-USD", "price": "1", "source": "sim", "timestamp": now_iso()}]}
        response = post(gateway, body, admin_key)
    assert response.status_code == 403
    assert "pw-host" in response.json()["error"]["message"]


async def test_the_seeds_answer_fields_and_the_batch_timestamp(
    rest: Process, admin_key: str, database_url: str
) -> None:
    """Seed 004's ingest answer carries ``message`` and ``latency_ms``; its batch-level ``timestamp`` is accepted
    and stands for the time of a feed that has none (a feed's own time wins)."""
    sent = now_iso(-30)
    own = now_iso(-20)
    body = {
        "worker_id": "seed-worker",
        "timestamp": sent,
        "feeds": [
            {"symbol": "BTS-USD", "price": "10.5", "volume": "1", "source": "kraken"},
            {"symbol": "BTS-USD", "price": "10.6", "volume": "1", "source": "kraken", "timestamp": own},
        ],
    }
    response = post(rest, body, admin_key)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["status"], data["ingested"], data["failed"]) == ("success", 2, 0)
    assert data["message"] == "2 price feeds ingested successfully"
    assert isinstance(data["latency_ms"], float) and 0 < data["latency_ms"] < 60_000
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT price::text, ts FROM price_feeds WHERE symbol = 'BTS-USD' ORDER BY price")
    finally:
        await conn.close()
    stamps = {row["price"]: row["ts"].isoformat(timespec="milliseconds") for row in rows}
    assert stamps == {"10.5": sent.replace("Z", "+00:00"), "10.6": own.replace("Z", "+00:00")}


def test_a_bad_batch_timestamp_is_a_400_naming_it(rest: Process, admin_key: str) -> None:
    feed = {"symbol": "BTS-USD", "price": "1", "volume": "1", "source": "kraken", "timestamp": now_iso(-5)}
    response = post(rest, {"timestamp": "yesterday", "feeds": [feed]}, admin_key)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["details"]) == ("VALIDATION_ERROR", {"field": "timestamp"})


def test_a_failed_batch_says_so_in_its_message(rest: Process, admin_key: str) -> None:
    feeds = [{"symbol": "BTS-USD", "price": "bad", "volume": "1", "source": "kraken", "timestamp": now_iso(-5)}]
    data = post(rest, {"feeds": feeds}, admin_key).json()["data"]
    assert (data["status"], data["message"]) == ("failed", "no price feed ingested: 1 of 1 failed (see errors)")
