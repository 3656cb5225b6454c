import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from perseus.marketdata.v1 import candles_pb2 as _candles_pb2
from perseus.marketdata.v1 import indicators_pb2 as _indicators_pb2
from perseus.marketdata.v1 import prices_pb2 as _prices_pb2
from perseus.marketdata.v1 import signals_pb2 as _signals_pb2
from perseus.marketdata.v1 import visibility_pb2 as _visibility_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RejectReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_REASON_UNSPECIFIED: _ClassVar[RejectReason]
    REJECT_REASON_INVALID_CHANNEL: _ClassVar[RejectReason]
    REJECT_REASON_CHANNEL_LIMIT: _ClassVar[RejectReason]
    REJECT_REASON_INVALID_RESUME: _ClassVar[RejectReason]
    REJECT_REASON_UNAVAILABLE: _ClassVar[RejectReason]
    REJECT_REASON_EMPTY: _ClassVar[RejectReason]
REJECT_REASON_UNSPECIFIED: RejectReason
REJECT_REASON_INVALID_CHANNEL: RejectReason
REJECT_REASON_CHANNEL_LIMIT: RejectReason
REJECT_REASON_INVALID_RESUME: RejectReason
REJECT_REASON_UNAVAILABLE: RejectReason
REJECT_REASON_EMPTY: RejectReason

class SubscribeRequest(_message.Message):
    __slots__ = ("channels", "resume_from")
    class ResumeFromEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedScalarFieldContainer[str]
    resume_from: _containers.ScalarMap[str, int]
    def __init__(self, channels: _Optional[_Iterable[str]] = ..., resume_from: _Optional[_Mapping[str, int]] = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("channel", "seq", "candle_close", "trade_signal", "price_update", "indicator_update", "publish_time", "traceparent")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CANDLE_CLOSE_FIELD_NUMBER: _ClassVar[int]
    TRADE_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    PRICE_UPDATE_FIELD_NUMBER: _ClassVar[int]
    INDICATOR_UPDATE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    channel: str
    seq: int
    candle_close: _candles_pb2.Candle
    trade_signal: _signals_pb2.TradeSignal
    price_update: _prices_pb2.PriceFeed
    indicator_update: _indicators_pb2.MacdV
    publish_time: _timestamp_pb2.Timestamp
    traceparent: str
    def __init__(self, channel: _Optional[str] = ..., seq: _Optional[int] = ..., candle_close: _Optional[_Union[_candles_pb2.Candle, _Mapping]] = ..., trade_signal: _Optional[_Union[_signals_pb2.TradeSignal, _Mapping]] = ..., price_update: _Optional[_Union[_prices_pb2.PriceFeed, _Mapping]] = ..., indicator_update: _Optional[_Union[_indicators_pb2.MacdV, _Mapping]] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ("channels",)
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, channels: _Optional[_Iterable[str]] = ...) -> None: ...

class ResumeGap(_message.Message):
    __slots__ = ("channel", "requested_seq", "first_available_seq")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_AVAILABLE_SEQ_FIELD_NUMBER: _ClassVar[int]
    channel: str
    requested_seq: int
    first_available_seq: int
    def __init__(self, channel: _Optional[str] = ..., requested_seq: _Optional[int] = ..., first_available_seq: _Optional[int] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[StreamEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[StreamEvent, _Mapping]]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("event", "subscribed", "resume_gap", "events")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    RESUME_GAP_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    event: StreamEvent
    subscribed: Subscribed
    resume_gap: ResumeGap
    events: EventBatch
    def __init__(self, event: _Optional[_Union[StreamEvent, _Mapping]] = ..., subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., resume_gap: _Optional[_Union[ResumeGap, _Mapping]] = ..., events: _Optional[_Union[EventBatch, _Mapping]] = ...) -> None: ...

class MultiplexRequest(_message.Message):
    __slots__ = ("ref", "subscribe", "resume_from", "unsubscribe")
    class ResumeFromEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    REF_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    ref: int
    subscribe: _containers.RepeatedScalarFieldContainer[str]
    resume_from: _containers.ScalarMap[str, int]
    unsubscribe: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ref: _Optional[int] = ..., subscribe: _Optional[_Iterable[str]] = ..., resume_from: _Optional[_Mapping[str, int]] = ..., unsubscribe: _Optional[_Iterable[str]] = ...) -> None: ...

class Unsubscribed(_message.Message):
    __slots__ = ("channels",)
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, channels: _Optional[_Iterable[str]] = ...) -> None: ...

class Rejected(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: RejectReason
    message: str
    def __init__(self, reason: _Optional[_Union[RejectReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class MultiplexResponse(_message.Message):
    __slots__ = ("ref", "event", "subscribed", "unsubscribed", "resume_gap", "rejected", "events")
    REF_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    RESUME_GAP_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ref: int
    event: StreamEvent
    subscribed: Subscribed
    unsubscribed: Unsubscribed
    resume_gap: ResumeGap
    rejected: Rejected
    events: EventBatch
    def __init__(self, ref: _Optional[int] = ..., event: _Optional[_Union[StreamEvent, _Mapping]] = ..., subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., unsubscribed: _Optional[_Union[Unsubscribed, _Mapping]] = ..., resume_gap: _Optional[_Union[ResumeGap, _Mapping]] = ..., rejected: _Optional[_Union[Rejected, _Mapping]] = ..., events: _Optional[_Union[EventBatch, _Mapping]] = ...) -> None: ...
