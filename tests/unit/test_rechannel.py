"""``rechannel``: a tick's event on the prices:all streams is its own event with another channel field."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.codec.events import price_event, rechannel
from core.domain.channels import ALL_SYMBOLS, Channel, ChannelFamily, all_prices_channel
from core.domain.prices import Tick
from perseus.marketdata.v1 import stream_service_pb2 as pb

TICK = Tick(
    symbol="BTC-USD", price=Decimal("67234.56"), volume=Decimal("1.5"), source="coinbase", ts_ms=1_760_000_000_123
)


@pytest.mark.parametrize("channel", [all_prices_channel("BTC-USD"), all_prices_channel(ALL_SYMBOLS)])
@pytest.mark.parametrize("trace", ["", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])
def test_the_spliced_event_is_the_event_encoded_for_that_channel(channel: Channel, trace: str) -> None:
    own = price_event(TICK, now_ms=42, traceparent=trace)
    assert rechannel(own, channel) == price_event(TICK, now_ms=42, traceparent=trace, channel=channel)


def test_an_event_whose_channel_field_does_not_lead_is_reencoded() -> None:
    event = pb.StreamEvent.FromString(price_event(TICK, now_ms=42))
    reordered = event.price_update.SerializeToString()  # no channel field first: the slow path
    payload = b"\x2a" + bytes((len(reordered),)) + reordered + b"\x0a\x03abc"
    spliced = pb.StreamEvent.FromString(rechannel(payload, all_prices_channel("BTC-USD")))
    assert spliced.channel == "prices:all:BTC-USD"
    assert spliced.price_update == event.price_update
    assert Channel(ChannelFamily.PRICES, "all", "BTC-USD", None) == all_prices_channel("BTC-USD")
