"""The OpenAPI document and the /docs page come from the route declarations and the protos' visibility."""

from __future__ import annotations

import json
import re

from common.projection import is_public, public_schema
from gateways.rest.app import OPERATIONS
from gateways.rest.docs import docs_html
from gateways.rest.openapi import ASYNCAPI_PATH, SPEC_PATH, openapi_document
from gateways.rest.params import (
    CANONICAL_SYMBOL_PATTERN,
    CURSOR_PATTERN,
    ISO_TIME_PATTERN,
    SYMBOL_PATTERN,
    TIME_PATTERN,
)
from perseus.marketdata.v1 import candles_pb2, market_pb2, prices_pb2, signals_pb2

DOCUMENT = openapi_document(OPERATIONS, version="1.2.3")
PROJECTED = (
    market_pb2.Exchange,
    market_pb2.Symbol,
    candles_pb2.Candle,
    signals_pb2.TradeSignal,
    prices_pb2.LatestPrice,
)


def test_every_route_is_documented_with_its_parameters() -> None:
    assert DOCUMENT["openapi"] == "3.1.0" and DOCUMENT["info"]["version"] == "1.2.3"
    for operation in OPERATIONS:
        documented = DOCUMENT["paths"][operation.path][operation.method.lower()]
        assert [p["name"] for p in documented["parameters"]] == [p.name for p in operation.params]
        assert {"200", "400", "401", "404", "429", "503"} <= set(documented["responses"])
        assert "Retry-After" in documented["responses"]["429"]["headers"]
        assert operation.cost in documented["description"]


def test_schemas_are_the_projection_schemas() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    for message in PROJECTED:
        expected = public_schema(message.DESCRIPTOR, ref=lambda d: {"$ref": f"#/components/schemas/{d.name}"})
        if "symbol" in expected["properties"]:  # answers spell a symbol canonically, and the document says so
            expected["properties"]["symbol"]["pattern"] = CANONICAL_SYMBOL_PATTERN
        assert schemas[message.DESCRIPTOR.name] == expected
    candles = DOCUMENT["paths"]["/public/v1/candles/{exchange}/{symbol}"]["get"]["responses"]["200"]
    body = candles["content"]["application/json"]["schema"]
    assert body["properties"]["data"] == {"type": "array", "items": {"$ref": "#/components/schemas/Candle"}}
    alerts = DOCUMENT["paths"]["/public/v1/alerts"]["get"]["responses"]["200"]["content"]["application/json"]
    assert alerts["schema"]["properties"]["meta"]["properties"]["next_cursor"] == {
        "anyOf": [{"type": "string", "pattern": CURSOR_PATTERN}, {"type": "null"}]
    }


def test_formats_are_declared_where_answers_and_parameters_meet() -> None:
    """A time parameter is a date-time (or epoch ms), a next_cursor matches the cursor parameter, a symbol in an
    answer matches the symbol parameters."""
    for operation in OPERATIONS:
        for parameter in DOCUMENT["paths"][operation.path][operation.method.lower()]["parameters"]:
            if parameter["name"] in ("start", "end", "since", "from", "to", "timestamp"):
                branches = parameter["schema"]["anyOf"]
                assert {"format": "date-time", "pattern": ISO_TIME_PATTERN} in branches
                assert {"pattern": TIME_PATTERN} in branches
    for name, schema in DOCUMENT["components"]["schemas"].items():
        symbol = schema.get("properties", {}).get("symbol")
        if symbol is not None:
            assert symbol["pattern"] == CANONICAL_SYMBOL_PATTERN, name
            assert re.fullmatch(CANONICAL_SYMBOL_PATTERN, "BTC-USD") and re.fullmatch(SYMBOL_PATTERN, "BTC-USD")


def test_no_internal_field_is_named_in_the_document() -> None:
    text = json.dumps(DOCUMENT)
    internal = {f.name for m in PROJECTED for f in m.DESCRIPTOR.fields if not is_public(f)} - {"id"}
    assert internal and not [name for name in internal if f'"{name}"' in text]
    assert '"id"' not in text


def test_the_docs_page_is_self_contained() -> None:
    """Swagger UI and the page's script come from the gateway; without scripts the routes are still listed."""
    page = docs_html(DOCUMENT, spec_path=SPEC_PATH, asyncapi_path=ASYNCAPI_PATH).decode()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == [
        "<script src='/docs/assets/swagger-ui/swagger-ui-bundle.js'>",
        "<script src='/docs/assets/explorer.js'>",
    ]
    scriptless = page[page.index("<noscript>") : page.index("</noscript>")]
    for operation in OPERATIONS:
        assert operation.path in scriptless
