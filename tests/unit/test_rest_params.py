"""REST parameter declarations: parsing, the 400s they raise, and the OpenAPI parameters they document."""

from __future__ import annotations

import re

import pytest

from gateways.common.errors import ValidationFailed
from gateways.rest.params import TIME_PATTERN, Param, canonical_symbol, parse, time_ms
from perseus.marketdata.v1 import common_pb2

PARAMS = (
    Param("exchange", "exchange", "", where="path"),
    Param("symbol", "symbol", "", where="path"),
    Param("timeframe", "timeframe", "", default="1h"),
    Param("limit", "integer", "", default=100, maximum=1000),
    Param("start", "time", ""),
    Param("symbols", "symbols", ""),
)


def values(query: dict[str, str], **path: str) -> dict[str, object]:
    return parse(PARAMS, {"exchange": "Sim", "symbol": "btc/usd", **path}, {k: [v] for k, v in query.items()})


def test_defaults_and_canonical_forms() -> None:
    assert values({}) == {
        "exchange": "sim",
        "symbol": "BTC-USD",
        "timeframe": common_pb2.TIMEFRAME_1H,
        "limit": 100,
        "start": None,
        "symbols": None,
    }
    parsed = values(
        {"timeframe": "5M", "limit": "1000", "start": "1790000000000", "symbols": "eth/usd,BTC-USD,ETH-USD"}
    )
    assert parsed["timeframe"] == common_pb2.TIMEFRAME_5M and parsed["limit"] == 1000
    assert parsed["start"] == 1_790_000_000_000 and parsed["symbols"] == ["ETH-USD", "BTC-USD"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "1001"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "9" * 40}, "limit"),
        ({"timeframe": "2h"}, "timeframe"),
        ({"start": "2026-12-02T06:00:00"}, "start"),
        ({"start": "9999-12-31T23:59:59-14:00"}, "start"),
        ({"start": "x" * 500}, "start"),
        ({"symbols": ",,"}, "symbols"),
        ({"symbols": ""}, "symbols"),
        ({"start": ""}, "start"),
        ({"timeframe": ""}, "timeframe"),
        ({"limit": ""}, "limit"),
        ({"symbols": ",".join(f"A{i}-B" for i in range(101))}, "symbols"),
    ],
)
def test_bad_values_name_their_parameter(query: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        values(query)
    assert raised.value.details == {"field": field} and raised.value.status_code == 400


def test_path_parameters_are_required_and_checked() -> None:
    with pytest.raises(ValidationFailed):
        values({}, symbol="")
    with pytest.raises(ValidationFailed):
        values({}, exchange="no such!")
    with pytest.raises(ValueError):
        canonical_symbol("BTCUSD")


def test_times_in_both_spellings() -> None:
    assert time_ms("2026-12-02T06:00:00Z") == time_ms("2026-12-02T07:00:00+01:00") == 1_796_191_200_000
    assert time_ms("1796191200000") == 1_796_191_200_000
    assert re.fullmatch(TIME_PATTERN, "2026-12-02T06:00:00.123Z") and re.fullmatch(TIME_PATTERN, "1796191200000")


def test_openapi_parameters_follow_the_declarations() -> None:
    limit = PARAMS[3].openapi()
    assert limit == {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    }
    assert PARAMS[0].openapi()["required"] is True
    assert PARAMS[2].openapi()["schema"]["enum"] == ["1m", "5m", "15m", "1h", "4h", "1d"]


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-02T06:00:00+99:00",  # Python: "offset must be a timedelta strictly between ..."
        "2026-13-02T06:00:00Z",
        "2026-02-31T06:00:00Z",
        "2026-12-02T25:00Z",
        "2026-12-02T06:00:60Z",
        "0001-01-01T00:00:00+01:00",  # Python: OverflowError
        "20261202T060000Z",  # ISO-8601's basic form: Python reads it, the document does not declare it
        "2026-12-02 06:00:00Z",
        "-1",
    ],
)
def test_a_bad_time_is_a_plain_message_without_python_internals(text: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        values({"start": text})
    message = str(raised.value.message)
    assert raised.value.details == {"field": "start"}
    assert message.startswith("`start`: ") and ("ISO-8601" in message or "between 1970-01-01" in message)
    assert "timedelta" not in message and " in 1.." not in message and "isoformat" not in message


def test_every_rfc3339_spelling_is_read() -> None:
    assert time_ms("2026-12-02t06:00:00.123456789z") == 1_796_191_200_123
    assert time_ms("2026-12-02T06:00Z") == time_ms("2026-12-02T06:00:00.000+00:00") == 1_796_191_200_000


def test_an_empty_value_is_refused_not_taken_as_absent() -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse((Param("exchange", "exchange", ""),), {}, {"exchange": [""]})
    assert raised.value.details == {"field": "exchange"} and "must not be empty" in str(raised.value.message)
    assert parse((Param("exchange", "exchange", ""),), {}, {}) == {"exchange": None}
