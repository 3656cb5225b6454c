"""The proto contract: every field declares its visibility; internal fields are internal."""

from __future__ import annotations

import pkgutil
from collections.abc import Iterator
from importlib import import_module

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

import perseus.marketdata.v1 as contract
from perseus.marketdata.v1 import visibility_pb2

PUBLIC = visibility_pb2.VISIBILITY_PUBLIC
INTERNAL = visibility_pb2.VISIBILITY_INTERNAL


def _messages() -> Iterator[Descriptor]:
    def walk(message: Descriptor) -> Iterator[Descriptor]:
        if not message.GetOptions().map_entry:  # synthesized by protoc; its parent field carries the option
            yield message
        for nested in message.nested_types:
            yield from walk(nested)

    for module in pkgutil.iter_modules(contract.__path__):
        if module.name.endswith("_pb2"):
            file = import_module(f"{contract.__name__}.{module.name}").DESCRIPTOR
            for message in file.message_types_by_name.values():
                yield from walk(message)


MESSAGES = {m.full_name: m for m in _messages()}
FIELDS = {f"{m.name}.{f.name}": f for m in MESSAGES.values() for f in m.fields}


def visibility(field: FieldDescriptor) -> int:
    return field.GetOptions().Extensions[visibility_pb2.visibility]


def test_the_contract_has_every_resource_of_the_contract_document() -> None:
    names = {m.name for m in MESSAGES.values()}
    assert {
        "Exchange",
        "Symbol",
        "PriceFeed",
        "LatestPrice",
        "PriceBucket",
        "ConsensusPrice",
        "Candle",
        "MacdV",
        "TradeSignal",
    } <= names


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_field_declares_public_or_internal(name: str) -> None:
    assert visibility(FIELDS[name]) in (PUBLIC, INTERNAL), f"{name} lacks (visibility)"


INTERNAL_FIELDS = [
    "Candle.is_synthetic",
    "Candle.sequence_num",
    "MacdV.fast_ema",
    "MacdV.slow_ema",
    "MacdV.atr",
    "MacdV.fast_period",
    "MacdV.slow_period",
    "MacdV.signal_period",
    "TradeSignal.alert_type",
    "TradeSignal.trigger_value",
    "TradeSignal.signal_delta",
    "TradeSignal.trigger_label",
    "TradeSignal.source_exchange_id",
]


@pytest.mark.parametrize("name", INTERNAL_FIELDS)
def test_proprietary_fields_of_the_contract_are_internal(name: str) -> None:
    assert visibility(FIELDS[name]) == INTERNAL


# Public handles, not row ids: a webhook's id is random ("wh_" and 24 hex digits) and a delivery's event id a
# random UUID; neither counts anything (the endpoint's row id is Webhook.row_id, internal).
PUBLIC_HANDLES = {"Webhook.id", "WebhookDelivery.event_id"}


@pytest.mark.parametrize(
    "name", sorted(n for n in FIELDS if (n.split(".")[1] == "id" or n.endswith("_id")) and n not in PUBLIC_HANDLES)
)
def test_every_internal_id_is_internal(name: str) -> None:
    assert visibility(FIELDS[name]) == INTERNAL


def test_public_fields_of_a_trade_signal_are_exactly_the_contract_ones() -> None:
    public = {f.name for f in MESSAGES["perseus.marketdata.v1.TradeSignal"].fields if visibility(f) == PUBLIC}
    assert public == {"symbol", "exchange", "timeframe", "signal_type", "direction", "strength", "price", "timestamp"}


def test_prices_and_volumes_are_decimal_strings() -> None:
    money = [
        f
        for n, f in FIELDS.items()
        if n.split(".")[1]
        in {"price", "volume", "open", "high", "low", "close", "bid", "ask", "median", "mean", "std_dev"}
    ]
    assert money
    assert all(f.type == FieldDescriptor.TYPE_STRING for f in money)
