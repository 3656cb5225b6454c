"""The AsyncAPI document: valid AsyncAPI 3.1 (the official schema); its event data is the public projection."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from common.projection import public_fields
from gateways.ws.asyncapi import asyncapi_document
from perseus.marketdata.v1 import candles_pb2, signals_pb2

SCHEMA = Path(__file__).parents[1] / "fixtures" / "asyncapi" / "asyncapi-3.1.0.schema.json"


def test_the_document_is_asyncapi_3_1_and_validates_against_its_schema() -> None:
    """Seed 000 asks for AsyncAPI 3.1 (issue 17); the schema is @asyncapi/specs' 3.1.0 (without $id)."""
    document = asyncapi_document("1.0", "localhost:8001")
    assert document["asyncapi"] == "3.1.0"
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(document)


def test_event_data_schemas_list_only_public_fields() -> None:
    schemas = asyncapi_document("1.0", "h:1")["components"]["schemas"]
    for message in (candles_pb2.Candle, signals_pb2.TradeSignal):
        expected = {f.name for f in public_fields(message.DESCRIPTOR)}
        assert set(schemas[message.DESCRIPTOR.name]["properties"]) == expected
    assert "is_synthetic" not in json.dumps(schemas) and "trigger_value" not in json.dumps(schemas)


def test_every_message_and_close_code_is_documented() -> None:
    document = asyncapi_document("1.0", "h:1")
    assert set(document["components"]["messages"]) == {
        "auth",
        "subscribe",
        "unsubscribe",
        "subscribed",
        "unsubscribed",
        "error",
        "heartbeat",
        "resume_gap",
        "candle_close",
        "trade_signal",
        "price_update",
        "indicator_update",
        "replay",
        "stop_replay",
        "replay_started",
        "replay_done",
        "replay_stopped",
    }
    indicator = document["components"]["messages"]["indicator_update"]["payload"]["properties"]["data"]
    assert indicator == {"$ref": "#/components/schemas/MacdV"}
    assert set(document["components"]["schemas"]["MacdV"]["properties"]) == {
        "exchange",
        "symbol",
        "timeframe",
        "timestamp",
        "macd_v",
        "signal",
        "histogram",
        "stage",
        "zone",
    }
    for code in ("4001", "4008", "4009", "4029", "1009"):
        assert code in document["info"]["description"]


def test_a_subscribe_without_resume_is_valid_and_a_bad_resume_is_not() -> None:
    """`resume` is optional: most subscribes carry none, and a client generated from the document must not need one."""
    subscribe = asyncapi_document("1.0", "localhost:8001")["components"]["messages"]["subscribe"]["payload"]
    jsonschema.validate({"action": "subscribe", "channels": ["prices:BTC-USD"]}, subscribe)
    resumed = {"action": "subscribe", "channels": ["prices:BTC-USD"], "resume": {"prices:BTC-USD": 3}}
    jsonschema.validate(resumed, subscribe)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"action": "subscribe", "channels": ["prices:BTC-USD"], "resume": {"x": -1}}, subscribe)


def test_the_key_in_the_subprotocol_is_documented() -> None:
    """Browsers send the key as a ``key.<API_KEY>`` subprotocol beside ``perseus.v1`` (issue 16)."""
    document = asyncapi_document("1.0", "h:1")
    scheme = document["components"]["securitySchemes"]["apiKeySubprotocol"]
    assert scheme["name"] == "Sec-WebSocket-Protocol" and scheme["in"] == "header"
    assert "perseus.v1" in scheme["description"] and "key.<API_KEY>" in scheme["description"]
    assert {"$ref": "#/components/securitySchemes/apiKeySubprotocol"} in document["servers"]["gateway"]["security"]
    assert "key.<API_KEY>" in document["info"]["description"]
