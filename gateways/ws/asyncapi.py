"""The AsyncAPI 3.1 document of ``/public/v1/stream``, built from the same declarations as the messages.

Event ``data`` schemas come from :func:`common.projection.public_schema`
of the payload messages of ``StreamEvent`` (so a field is in the document
exactly when the proto declares it public), and the resume-gap fields from
``ResumeGap``. Close codes, error codes and limits come from the protocol
module's constants. Pure code: ``asyncapi_document(version, host)`` is a dict.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor

from common.projection import descriptor_of, message_type, public_schema
from gateways.ws import limits, protocol, subprotocols
from gateways.ws.channels import ALL_SOURCES, EVERY_PRICE, FAMILIES, TIMEFRAMES
from gateways.ws.protocol import CloseCode, ErrorCode
from perseus.marketdata.v1 import stream_service_pb2 as pb

STREAM_PATH = "/public/v1/stream"
SCHEMAS = "#/components/schemas/"
MESSAGES = "#/components/messages/"


def _schemas(root: Descriptor, into: dict[str, Any]) -> dict[str, Any]:
    """``root``'s public schema in ``into`` (and its nested messages), referenced by name."""

    def ref(descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.name not in into:
            into[descriptor.name] = {}
            into[descriptor.name] = public_schema(descriptor, ref=ref)
        return {"$ref": SCHEMAS + descriptor.name}

    return ref(root)


def _event_payloads() -> dict[str, Descriptor]:
    payload = descriptor_of(pb.StreamEvent).oneofs_by_name["payload"]
    return {field.name: message_type(field) for field in payload.fields}


def _envelope(properties: dict[str, Any], description: str, *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def asyncapi_document(version: str, host: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    channel_name = {
        "type": "string",
        "maxLength": 100,
        "description": "candles:{SYMBOL}:{TF}, signals:{SYMBOL}:{TF}, indicators:{SYMBOL}:{TF}, prices:{SYMBOL}; "
        "optionally with the exchange after the family (candles:coinbase:BTC-USD:1h). "
        f"Families: {', '.join(FAMILIES)}; timeframes: {', '.join(TIMEFRAMES)}. "
        f"prices:{ALL_SOURCES}:{{SYMBOL}} carries the price updates of every source (exchange) of the symbol; "
        f"{EVERY_PRICE} those of every symbol and source (internal and admin keys only). Both are recorded "
        "only while someone listens and for a minute after: a resume across a longer silence gets resume_gap. "
        "The symbol must be listed by an exchange (INVALID_CHANNEL otherwise).",
    }
    symbols_list = {
        "type": "array",
        "items": {"type": "string", "maxLength": 50, "examples": ["BTC/USD", "ETH-USD"]},
        "minItems": 1,
        "maxItems": protocol.MAX_CHANNELS_PER_MESSAGE,
        "description": f"seed 004's dialect: each symbol means the channel prices:{ALL_SOURCES}:{{SYMBOL}} (every "
        "source), which the acknowledgement and the events name; channels and symbols together name at most "
        f"{protocol.MAX_CHANNELS_PER_MESSAGE}.",
    }

    channels_list = {
        "type": "array",
        "items": channel_name,
        "minItems": 1,
        "maxItems": protocol.MAX_CHANNELS_PER_MESSAGE,
    }
    messages: dict[str, Any] = {
        "subscribe": _envelope(
            {
                "action": {"const": "subscribe"},
                "channels": channels_list,
                "symbols": symbols_list,
                "resume": {
                    "type": "object",
                    "description": "last seq seen per channel: what came after it is replayed first",
                    "additionalProperties": {"type": "integer", "minimum": 0},
                },
            },
            "Add channels, named in channels, symbols or both (a connection holds at most "
            f"{protocol.MAX_SUBSCRIPTIONS_PER_CONNECTION}). Applied whole or not at all.",
            optional=("resume", "channels", "symbols"),
        ),
        "unsubscribe": _envelope(
            {"action": {"const": "unsubscribe"}, "channels": channels_list, "symbols": symbols_list},
            "Remove channels (named in channels, symbols or both).",
            optional=("channels", "symbols"),
        ),
        "auth": _envelope(
            {"action": {"const": "auth"}, "key": {"type": "string", "maxLength": 256}},
            "Seed 004's authentication by message: the first message of a connection that sent no key on the "
            "upgrade request. Without it within 5 s, or with a bad key, the connection closes with 4001.",
        ),
        "subscribed": _envelope(
            {"type": {"const": "subscribed"}, "channels": {"type": "array", "items": channel_name}},
            "Acknowledges a subscribe; lists the channels as the client named them.",
        ),
        "unsubscribed": _envelope(
            {"type": {"const": "unsubscribed"}, "channels": {"type": "array", "items": channel_name}},
            "Acknowledges an unsubscribe.",
        ),
        "error": _envelope(
            {
                "type": {"const": "error"},
                "code": {"type": "string", "enum": [c.value for c in ErrorCode]},
                "message": {"type": "string"},
            },
            "A message was refused; the connection stays open.",
        ),
        "heartbeat": _envelope(
            {"type": {"const": "heartbeat"}, "timestamp": {"type": "string", "format": "date-time"}},
            "Sent every 30 s, as well as protocol pings.",
        ),
    }
    gap = public_schema(descriptor_of(pb.ResumeGap))
    messages["resume_gap"] = _envelope(
        {"type": {"const": "resume_gap"}, **gap["properties"], "channel": channel_name},
        "The channel's history no longer reaches back to requested_seq: the events after it and before "
        "first_available_seq are gone. Sent before the replay that starts at first_available_seq.",
    )
    for event_type, descriptor in _event_payloads().items():
        messages[event_type] = _envelope(
            {
                "type": {"const": event_type},
                "channel": channel_name,
                "seq": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "increases by one per channel; absent from replayed events",
                },
                "replay": {
                    "const": True,
                    "description": "present (true) only on an event played back by a replay request",
                },
                "data": _schemas(descriptor, schemas),
            },
            f"One {event_type.replace('_', ' ')} event: live (with seq), or played back by a replay request (with "
            "replay: true and no seq; data carries the original times).",
            optional=("seq", "replay"),
        )
    messages.update(_replay_messages(channel_name))
    received = ["auth", "subscribe", "unsubscribe", "replay", "stop_replay"]
    sent = [name for name in messages if name not in received]
    return {
        "asyncapi": "3.1.0",
        "info": {
            "title": "Perseus public stream",
            "version": version,
            "description": _description(),
        },
        "defaultContentType": "application/json",
        "servers": {
            "gateway": {
                "host": host,
                "protocol": "ws",
                "security": [
                    {"$ref": "#/components/securitySchemes/apiKeyQuery"},
                    {"$ref": "#/components/securitySchemes/keyQuery"},
                    {"$ref": "#/components/securitySchemes/apiKeyHeader"},
                    {"$ref": "#/components/securitySchemes/apiKeySubprotocol"},
                ],
            }
        },
        "channels": {
            "stream": {
                "address": STREAM_PATH,
                "messages": {name: {"$ref": MESSAGES + name} for name in messages},
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {"apiKey": {"type": "string"}, "key": {"type": "string"}},
                        },
                    }
                },
            }
        },
        "operations": {
            "receiveRequests": {
                "action": "receive",
                "channel": {"$ref": "#/channels/stream"},
                "messages": [{"$ref": f"#/channels/stream/messages/{name}"} for name in received],
            },
            "sendMessages": {
                "action": "send",
                "channel": {"$ref": "#/channels/stream"},
                "messages": [{"$ref": f"#/channels/stream/messages/{name}"} for name in sent],
            },
        },
        "components": {
            "messages": {name: {"name": name, "payload": payload} for name, payload in messages.items()},
            "schemas": schemas,
            "securitySchemes": {
                "apiKeyQuery": {"type": "httpApiKey", "name": "apiKey", "in": "query"},
                "keyQuery": {
                    "type": "httpApiKey",
                    "name": "key",
                    "in": "query",
                    "description": "seed 004's name for ?apiKey=; or send no key and a first message "
                    '{"action":"auth","key":"<KEY>"} within 5 s.',
                },
                "apiKeyHeader": {"type": "httpApiKey", "name": "X-API-Key", "in": "header"},
                "apiKeySubprotocol": {
                    "type": "httpApiKey",
                    "name": "Sec-WebSocket-Protocol",
                    "in": "header",
                    "description": _SUBPROTOCOL_KEY,
                },
            },
        },
    }


def _replay_messages(channel_name: dict[str, Any]) -> dict[str, Any]:
    """History replay (issue 21): the request, its stop, and the three state messages."""
    prices_channel = {
        **channel_name,
        "description": "prices:{SYMBOL}, prices:{exchange}:{SYMBOL}, "
        f"prices:{ALL_SOURCES}:{{SYMBOL}} (every source) or candles:[{{exchange}}:]{{SYMBOL}}:{{TF}} (closed "
        "candles); other families are INVALID_CHANNEL.",
    }
    time = {
        "oneOf": [
            {"type": "integer", "minimum": 0, "description": "epoch milliseconds"},
            {"type": "string", "format": "date-time", "description": "ISO 8601 with a zone"},
        ]
    }
    count = {"type": "integer", "minimum": 0, "description": "events sent by this replay"}
    return {
        "replay": _envelope(
            {
                "action": {"const": "replay"},
                "channel": prices_channel,
                "start": time,
                "end": time,
                "speed": {
                    "oneOf": [
                        {"type": "number", "exclusiveMinimum": 0, "maximum": protocol.MAX_REPLAY_SPEED},
                        {"const": "max"},
                    ],
                    "default": 1,
                    "description": "a multiple of real time, or max: as fast as the client reads",
                },
            },
            "Play the stored events of one prices, candles or signals channel with times in start <= t < end "
            "(a candle's open time), oldest first, as "
            "the live envelopes with replay: true and no seq, between replay_started and replay_done (or "
            "replay_stopped). One replay at a time per connection; PERSEUS_WS_REPLAYS_PER_KEY per key on a "
            "gateway (RATE_LIMITED beyond); at most PERSEUS_WS_REPLAY_MAX_HOURS long (INVALID_MESSAGE); "
            "end not after start, a speed of 0 or below: INVALID_MESSAGE. The channel counts against the "
            "channel budgets while it plays, and the request against the message rate.",
            optional=("speed",),
        ),
        "stop_replay": _envelope(
            {"action": {"const": "stop_replay"}},
            "Stop this connection's replay: answered with replay_stopped (INVALID_MESSAGE if none plays).",
        ),
        "replay_started": _envelope(
            {
                "type": {"const": "replay_started"},
                "channel": prices_channel,
                "start": {"type": "integer", "description": "epoch milliseconds"},
                "end": {"type": "integer", "description": "epoch milliseconds"},
                "speed": {"oneOf": [{"type": "number"}, {"const": "max"}]},
            },
            "A replay request was accepted; its events follow.",
        ),
        "replay_done": _envelope(
            {"type": {"const": "replay_done"}, "channel": prices_channel, "count": count},
            "The replay sent every event of its range.",
        ),
        "replay_stopped": _envelope(
            {
                "type": {"const": "replay_stopped"},
                "channel": prices_channel,
                "count": count,
                "error": {"type": "string", "description": "why the gateway cut it short (absent after stop_replay)"},
            },
            "The replay ended early: after stop_replay, or cut short by the gateway (with error).",
            optional=("error",),
        ),
    }


_SUBPROTOCOL_KEY = (
    f"For browsers, which cannot set headers: offer the subprotocols {subprotocols.PROTOCOL} and "
    f'{subprotocols.KEY_PREFIX}<API_KEY>, as in new WebSocket(url, ["{subprotocols.PROTOCOL}", '
    f'"{subprotocols.KEY_PREFIX}" + apiKey]); the key stays out of the URL. The server selects '
    f"{subprotocols.PROTOCOL} and never echoes the key. Offering subprotocols without {subprotocols.PROTOCOL} "
    "is refused with HTTP 400; a key here and a different one in ?apiKey= or X-API-Key closes with 4001."
)


def _description() -> str:
    codes = {
        CloseCode.INVALID_KEY: "missing or invalid key",
        CloseCode.TOO_MANY_CONNECTIONS: "the key already has its maximum number of connections (5 by default), or "
        "the client address has its maximum on this gateway (PERSEUS_WS_MAX_CONNECTIONS_PER_IP, 10 by default)",
        CloseCode.TOO_SLOW: "the client is too slow (backpressure)",
        CloseCode.TOO_MANY_MESSAGES: "the client sends too many messages",
        CloseCode.MESSAGE_TOO_BIG: "a frame is too large",
        CloseCode.TRY_AGAIN_LATER: "try again later: the gateway holds its maximum of connections "
        "(PERSEUS_WS_MAX_CONNECTIONS), or the key cannot be checked now",
    }
    lines = [f"- {int(code)}: {text}" for code, text in codes.items()]
    return (
        "Live candle closes, trade signals, indicator updates (the public MACD-V on every close of "
        "indicators:{SYMBOL}:{TF}) and price updates. Authenticate with ?apiKey= (or seed 004's ?key=), X-API-Key, "
        f"(browsers) the subprotocols {subprotocols.PROTOCOL} and {subprotocols.KEY_PREFIX}<API_KEY>, or a first "
        'message {"action":"auth","key":"<KEY>"} within 5 s. Seed 004\'s {"action":"subscribe","symbols":'
        f'["BTC/USD"]}} subscribes prices:{ALL_SOURCES}:BTC-USD (every source).\n'
        f"A message names 1 to {protocol.MAX_CHANNELS_PER_MESSAGE} channels; a connection holds at most "
        f"{protocol.MAX_SUBSCRIPTIONS_PER_CONNECTION}, and a key's connections at most "
        "PERSEUS_WS_CHANNELS_PER_KEY distinct channels on a gateway (SUBSCRIPTION_LIMIT beyond). A channel's "
        "symbol must be listed by its exchange (INVALID_CHANNEL). A subscribe replays at most 5,000 events "
        f"(the rest is a resume_gap). At most {limits.MESSAGE_RATE_PER_S:g} messages/s "
        f"(bursts of {limits.MESSAGE_BURST}). A client more than {limits.SKIP_BYTES // 1024} KiB behind has "
        "events skipped (a seq gap) and is then closed. Close codes:\n" + "\n".join(lines)
    )
