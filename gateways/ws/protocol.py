"""The public stream's message protocol (CONTRACT.md, WebSocket gateway): client frames in, server frames out.

Pure code, no asyncio: :func:`parse_client_message` turns one received frame
into a :class:`Subscribe`, an :class:`Unsubscribe` or a :class:`ProtocolError`
(the ``error`` message to send back); the ``*_message`` functions give the
JSON bytes of each server message, and :func:`text_frame` the WebSocket frame
that carries them. An event is serialised once per channel
(:func:`event_message`, from a ``data`` already rendered to JSON) and its frame
encoded once for every client that receives it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateways.ws.channels import EVERY_PRICE_CANONICAL, InvalidChannel, all_sources_channel, canonical_channel

MAX_CHANNELS_PER_MESSAGE = 20
MAX_SUBSCRIPTIONS_PER_CONNECTION = 50
MAX_ERROR_TEXT = 300
_OPCODE_TEXT = 0x81  # FIN + text; server frames are never masked (RFC 6455 5.1)
_OPCODE_PING = 0x89  # FIN + ping


class ErrorCode(enum.StrEnum):
    INVALID_CHANNEL = "INVALID_CHANNEL"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    SUBSCRIPTION_LIMIT = "SUBSCRIPTION_LIMIT"
    RATE_LIMITED = "RATE_LIMITED"


class CloseCode(enum.IntEnum):
    """Close codes of CONTRACT.md (1009 is sent by the websockets protocol itself)."""

    INVALID_KEY = 4001
    TOO_MANY_CONNECTIONS = 4008
    TOO_SLOW = 4009
    TOO_MANY_MESSAGES = 4029
    MESSAGE_TOO_BIG = 1009
    GOING_AWAY = 1001
    TRY_AGAIN_LATER = 1013
    NO_PONG = 1011  # a protocol ping unanswered within the ping timeout


@dataclass(frozen=True, slots=True)
class ProtocolError:
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``channels`` maps each name as the client wrote it to its canonical name, in message order."""

    channels: dict[str, str]
    resume: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channels: dict[str, str]


@dataclass(frozen=True, slots=True)
class Replay:
    """``{"action":"replay"}``: ``channel`` as written and its canonical name, the range in epoch ms
    (``start_ms <= t < end_ms``), and ``speed`` a multiple of real time (``None``: ``"max"``, as fast as the
    client reads)."""

    name: str
    canonical: str
    start_ms: int
    end_ms: int
    speed: float | None


@dataclass(frozen=True, slots=True)
class StopReplay:
    pass


ClientMessage = Subscribe | Unsubscribe | Replay | StopReplay | ProtocolError
INVALID = ErrorCode.INVALID_MESSAGE
# ``symbols`` is seed 004's dialect: each symbol means its prices:all:{SYMBOL} channel (every source).
_FIELDS = {
    "subscribe": {"action", "channels", "symbols", "resume"},
    "unsubscribe": {"action", "channels", "symbols"},
    "replay": {"action", "channel", "start", "end", "speed"},
    "stop_replay": {"action"},
}
_ACTIONS = "subscribe, unsubscribe, replay or stop_replay"
MAX_REPLAY_SPEED = 1_000_000.0


def parse_client_message(frame: str | bytes, *, default_exchange: str) -> ClientMessage:
    """One received frame as a request, or the error to answer it with."""
    if not isinstance(frame, str):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, "binary frames are not accepted; send JSON text")
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return ProtocolError(ErrorCode.INVALID_MESSAGE, "the message is not valid JSON")
    if not isinstance(message, dict):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, 'a message is a JSON object such as {"action":"subscribe"}')
    action = message.get("action")
    if action == "auth":
        return ProtocolError(INVALID, "the connection is authenticated already; send subscribe or unsubscribe")
    if action not in _FIELDS:
        return ProtocolError(INVALID, f"unknown action {_short(action)}; use {_ACTIONS}")
    unknown = sorted(set(message) - _FIELDS[action])
    if unknown:
        return ProtocolError(ErrorCode.INVALID_MESSAGE, f"unknown field {_short(unknown[0])} in a {action} message")
    if action == "stop_replay":
        return StopReplay()
    if action == "replay":
        return _replay(message, default_exchange)
    channels = _channels(message.get("channels"), message.get("symbols"), default_exchange)
    if isinstance(channels, ProtocolError):
        return channels
    if action == "unsubscribe":
        return Unsubscribe(channels)
    resume = _resume(message.get("resume"), channels)
    if isinstance(resume, ProtocolError):
        return resume
    return Subscribe(channels, resume)


def _channels(value: Any, symbols: Any, default_exchange: str) -> dict[str, str] | ProtocolError:
    """The channels of ``channels`` (names as written) and of seed 004's ``symbols`` (named
    ``prices:all:{SYMBOL}``), in message order; at least one of the two is a non-empty list."""
    if symbols is None and (not isinstance(value, list) or not value):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, '"channels" must be a non-empty list of channel names')
    if symbols is not None and (not isinstance(symbols, list) or not symbols):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, '"symbols" must be a non-empty list such as ["BTC/USD"]')
    if value is not None and not isinstance(value, list):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, '"channels" must be a list of channel names')
    count = len(value or ()) + len(symbols or ())
    if count > MAX_CHANNELS_PER_MESSAGE:
        return ProtocolError(
            ErrorCode.SUBSCRIPTION_LIMIT, f"a message names at most {MAX_CHANNELS_PER_MESSAGE} channels (got {count})"
        )
    channels: dict[str, str] = {}
    try:
        for name in value or ():
            channels.setdefault(name, canonical_channel(name, default_exchange))
        for symbol in symbols or ():
            name = all_sources_channel(symbol)
            channels.setdefault(name, name)
    except InvalidChannel as exc:
        return ProtocolError(ErrorCode.INVALID_CHANNEL, str(exc))
    return channels


def _resume(value: Any, channels: dict[str, str]) -> dict[str, int] | ProtocolError:
    if value is None:
        return {}
    if not isinstance(value, dict):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, '"resume" must be an object {"<channel>": <last seq seen>}')
    resume: dict[str, int] = {}
    for name, seq in value.items():
        if name not in channels:
            return ProtocolError(ErrorCode.INVALID_MESSAGE, f"resume names {_short(name)}, which is not in channels")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
            return ProtocolError(INVALID, f"resume seq of {_short(name)} must be a non-negative integer")
        resume[name] = seq
    return resume


def _replay(message: dict[str, Any], default_exchange: str) -> Replay | ProtocolError:
    """A replay request: one prices, candles or signals channel, ``start`` and ``end`` as epoch milliseconds or
    ISO 8601 times (``start < end``), ``speed`` a positive number or ``"max"`` (default 1, real time)."""
    name = message.get("channel")
    if not isinstance(name, str):
        return ProtocolError(INVALID, '"channel" must be a channel name such as "prices:BTC-USD"')
    try:
        canonical = canonical_channel(name, default_exchange)
    except InvalidChannel as exc:
        return ProtocolError(ErrorCode.INVALID_CHANNEL, str(exc))
    if not canonical.startswith(("prices:", "candles:", "signals:")) or canonical == EVERY_PRICE_CANONICAL:
        text = f"invalid channel {_short(name)}: replay serves the prices, candles or signals channel of one symbol"
        return ProtocolError(ErrorCode.INVALID_CHANNEL, text)
    start, end = _time(message.get("start"), "start"), _time(message.get("end"), "end")
    if isinstance(start, ProtocolError):
        return start
    if isinstance(end, ProtocolError):
        return end
    if start >= end:
        return ProtocolError(INVALID, '"start" must be before "end"')
    speed = message.get("speed", 1)
    if speed == "max":
        return Replay(name, canonical, start, end, None)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < speed <= MAX_REPLAY_SPEED:
        return ProtocolError(INVALID, f'"speed" must be a number above 0 (at most {MAX_REPLAY_SPEED:g}) or "max"')
    return Replay(name, canonical, start, end, float(speed))


def _time(value: Any, field: str) -> int | ProtocolError:
    """Epoch milliseconds from an integer (milliseconds) or an ISO 8601 string with a zone."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is not None:
                return int(parsed.timestamp() * 1000)
    return ProtocolError(INVALID, f'"{field}" must be epoch milliseconds or an ISO 8601 time with a zone')


def _short(value: object) -> str:
    text = orjson.dumps(value).decode() if isinstance(value, str | int | float | bool | None) else type(value).__name__
    return text if len(text) <= 60 else text[:60] + "…"


# --- server messages --------------------------------------------------------------------------


def subscribed_message(channels: list[str]) -> bytes:
    return orjson.dumps({"type": "subscribed", "channels": channels})


def unsubscribed_message(channels: list[str]) -> bytes:
    return orjson.dumps({"type": "unsubscribed", "channels": channels})


def error_message(code: ErrorCode, message: str) -> bytes:
    return orjson.dumps({"type": "error", "code": code.value, "message": message[:MAX_ERROR_TEXT]})


def heartbeat_message(timestamp: str) -> bytes:
    return orjson.dumps({"type": "heartbeat", "timestamp": timestamp})


def resume_gap_message(channel: str, gap: dict[str, Any]) -> bytes:
    """``gap`` is the public projection of the core's ``ResumeGap``; ``channel`` the client's name."""
    return orjson.dumps({"type": "resume_gap", **gap, "channel": channel})


def event_message(event_type: str, channel: str, seq: int, data_json: bytes) -> bytes:
    """``{"type","channel","seq","data"}`` with ``data`` already JSON: built once per channel and name."""
    head = orjson.dumps({"type": event_type, "channel": channel, "seq": seq})
    return b'%s,"data":%s}' % (head[:-1], data_json)


def replay_event_message(event_type: str, channel: str, data_json: bytes) -> bytes:
    """A replayed event: the live envelope without ``seq`` (stored history has none; a client's resume
    positions stay those of live events) and with ``"replay": true``; ``data`` has the original times."""
    head = orjson.dumps({"type": event_type, "channel": channel, "replay": True})
    return b'%s,"data":%s}' % (head[:-1], data_json)


def replay_state_message(state: str, channel: str, **fields: Any) -> bytes:
    """``replay_started``, ``replay_done`` or ``replay_stopped`` for ``channel``."""
    return orjson.dumps({"type": state, "channel": channel, **fields})


def text_frame(payload: bytes) -> bytes:
    """The unmasked, unfragmented text frame of ``payload`` (written as is to every transport)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", _OPCODE_TEXT, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", _OPCODE_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _OPCODE_TEXT, 127, length)
    return header + payload


def ping_frame(payload: bytes) -> bytes:
    """The unmasked protocol ping carrying ``payload`` (at most 125 bytes, RFC 6455 5.5)."""
    if len(payload) > 125:
        raise ValueError("a ping's payload is at most 125 bytes")
    return struct.pack("!BB", _OPCODE_PING, len(payload)) + payload
