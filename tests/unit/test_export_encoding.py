"""The export bodies' encoding (issue 21): CSV per RFC 4180 with its trailer, NDJSON lines with theirs."""

from __future__ import annotations

import csv
import io

import orjson

from common.projection import descriptor_of
from gateways.common.errors import ServiceUnavailable
from gateways.rest.export import Encoder
from perseus.marketdata.v1 import prices_pb2


def tick(source: str, price: str) -> prices_pb2.PriceFeed:
    feed = prices_pb2.PriceFeed(
        id=42, symbol="BTC-USD", price=price, volume="0.5", source=source, worker_id="w-secret", bid="1"
    )
    feed.timestamp.FromMilliseconds(1_790_000_000_123)
    feed.ingested_time.FromMilliseconds(1_790_000_000_500)
    return feed


def test_csv_quotes_as_rfc_4180_and_keeps_only_public_columns() -> None:
    encoder = Encoder("csv", descriptor_of(prices_pb2.PriceFeed))
    body = encoder.head() + encoder.rows([tick('a,"b"', "1.50"), tick("plain", "2")]) + encoder.end(2)
    text = body.decode()
    assert text.splitlines()[1] == 'BTC-USD,1.50,0.5,"a,""b""",2026-09-21T14:13:20.123Z,1,,'
    assert "\r\n" in text and text.endswith("# end rows=2\r\n")
    records = list(csv.reader(io.StringIO(text)))
    assert records[0] == ["symbol", "price", "volume", "source", "timestamp", "bid", "ask", "exchange_timestamp"]
    assert records[1][3] == 'a,"b"' and records[2][:4] == ["BTC-USD", "2", "0.5", "plain"]
    assert "w-secret" not in text and "42" not in text


def test_ndjson_lines_and_the_error_line() -> None:
    encoder = Encoder("ndjson", descriptor_of(prices_pb2.PriceFeed))
    assert encoder.head() == b""
    lines = encoder.rows([tick("x", "3.10")]).splitlines()
    assert orjson.loads(lines[0]) == {
        "symbol": "BTC-USD",
        "price": "3.10",
        "volume": "0.5",
        "source": "x",
        "timestamp": "2026-09-21T14:13:20.123Z",
        "bid": "1",
        "ask": None,
        "exchange_timestamp": None,
    }
    assert orjson.loads(encoder.end(7)) == {"type": "end", "rows": 7}
    error = orjson.loads(encoder.error(ServiceUnavailable(), "rid-1", 5))
    assert error["type"] == "error" and error["rows"] == 5
    assert error["error"]["code"] == "SERVICE_UNAVAILABLE" and error["error"]["request_id"] == "rid-1"
    csv_error = Encoder("csv", descriptor_of(prices_pb2.PriceFeed)).error(ServiceUnavailable(), "rid-1", 5)
    assert csv_error.startswith(b"# error SERVICE_UNAVAILABLE: ") and csv_error.endswith(b"\r\n")
