"""The stream's message protocol and channel names, as pure functions."""

from __future__ import annotations

import json

import pytest
from websockets.frames import Frame
from websockets.streams import StreamReader

from gateways.ws import protocol
from gateways.ws.channels import InvalidChannel, canonical_channel
from gateways.ws.protocol import ErrorCode, ProtocolError, Subscribe, Unsubscribe, parse_client_message


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("candles:BTC-USD:1h", "candles:sim:BTC-USD:1h"),
        ("candles:coinbase:BTC-USD:1h", "candles:coinbase:BTC-USD:1h"),
        ("Candles:btc/usd:1H", "candles:sim:BTC-USD:1h"),
        ("signals:ETH-USD:4h", "signals:sim:ETH-USD:4h"),
        ("prices:BTC-USD", "prices:sim:BTC-USD"),
        ("prices:Kraken:btc-usd", "prices:kraken:BTC-USD"),
        ("indicators:BTC-USD:1h", "indicators:sim:BTC-USD:1h"),
        ("Indicators:Coinbase:eth/usd:15M", "indicators:coinbase:ETH-USD:15m"),
    ],
)
def test_channel_names_become_canonical_explicit_names(name: str, canonical: str) -> None:
    assert canonical_channel(name, "sim") == canonical


@pytest.mark.parametrize(
    "name",
    [
        "",
        "prices",
        "prices:",
        "weather:BTC-USD",
        "candles:BTC-USD",
        "candles:BTC-USD:2h",
        "prices:BTCUSD",
        "prices:a:b:BTC-USD",
        "prices:9x:BTC-USD",
        "prices:BTC-USD-EUR",
        "x" * 101,
        "prices:\u0412TC-USD",  # a Cyrillic letter
        7,
        None,
    ],
)
def test_malformed_channel_names_are_refused_with_a_reason(name: object) -> None:
    with pytest.raises(InvalidChannel, match="invalid channel"):
        canonical_channel(name, "sim")


def test_a_subscribe_keeps_the_clients_names_in_order_without_duplicates() -> None:
    message = parse_client_message(
        json.dumps(
            {
                "action": "subscribe",
                "channels": ["prices:BTC-USD", "prices:btc-usd", "prices:BTC-USD"],
                "resume": {"prices:BTC-USD": 4},
            }
        ),
        default_exchange="sim",
    )
    assert message == Subscribe(
        {"prices:BTC-USD": "prices:sim:BTC-USD", "prices:btc-usd": "prices:sim:BTC-USD"}, {"prices:BTC-USD": 4}
    )


def test_an_unsubscribe() -> None:
    message = parse_client_message('{"action":"unsubscribe","channels":["signals:BTC-USD:1h"]}', default_exchange="x")
    assert message == Unsubscribe({"signals:BTC-USD:1h": "signals:x:BTC-USD:1h"})


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"{}", ErrorCode.INVALID_MESSAGE),
        ("{", ErrorCode.INVALID_MESSAGE),
        ('"subscribe"', ErrorCode.INVALID_MESSAGE),
        ('{"action":"subscribe","channels":"prices:BTC-USD"}', ErrorCode.INVALID_MESSAGE),
        ('{"action":"subscribe","channels":["prices:BTC-USD"],"extra":1}', ErrorCode.INVALID_MESSAGE),
        ('{"action":"unsubscribe","channels":["prices:BTC-USD"],"resume":{}}', ErrorCode.INVALID_MESSAGE),
        ('{"action":"subscribe","channels":["prices:BTC-USD"],"resume":[]}', ErrorCode.INVALID_MESSAGE),
        (
            '{"action":"subscribe","channels":["prices:BTC-USD"],"resume":{"prices:BTC-USD":-1}}',
            ErrorCode.INVALID_MESSAGE,
        ),
        (
            '{"action":"subscribe","channels":["prices:BTC-USD"],"resume":{"prices:BTC-USD":true}}',
            ErrorCode.INVALID_MESSAGE,
        ),
        ('{"action":"subscribe","channels":["prices:BTC"]}', ErrorCode.INVALID_CHANNEL),
        (
            json.dumps({"action": "subscribe", "channels": [f"prices:A{i}-B" for i in range(21)]}),
            ErrorCode.SUBSCRIPTION_LIMIT,
        ),
    ],
)
def test_bad_messages_become_the_error_to_send(frame: str | bytes, code: ErrorCode) -> None:
    message = parse_client_message(frame, default_exchange="sim")
    assert isinstance(message, ProtocolError) and message.code == code and message.message


def test_twenty_channels_are_allowed() -> None:
    frame = json.dumps({"action": "subscribe", "channels": [f"prices:A{i}-B" for i in range(20)]})
    assert isinstance(parse_client_message(frame, default_exchange="sim"), Subscribe)


def test_an_event_message_is_the_contract_envelope() -> None:
    body = protocol.event_message("candle_close", "candles:BTC-USD:1h", 12, b'{"open":"1.5"}')
    assert json.loads(body) == {
        "type": "candle_close",
        "channel": "candles:BTC-USD:1h",
        "seq": 12,
        "data": {"open": "1.5"},
    }


def test_server_messages() -> None:
    assert json.loads(protocol.error_message(ErrorCode.RATE_LIMITED, "slow down")) == {
        "type": "error",
        "code": "RATE_LIMITED",
        "message": "slow down",
    }
    assert json.loads(protocol.heartbeat_message("2026-12-02T06:00:00.000Z"))["type"] == "heartbeat"
    assert json.loads(protocol.subscribed_message(["a"])) == {"type": "subscribed", "channels": ["a"]}
    assert json.loads(protocol.unsubscribed_message(["a"])) == {"type": "unsubscribed", "channels": ["a"]}


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_text_frames_parse_as_websocket_frames(size: int) -> None:
    payload = b"x" * size
    reader = StreamReader()
    reader.feed_data(protocol.text_frame(payload))
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert frame.data == payload and frame.fin and frame.opcode.name == "TEXT"
