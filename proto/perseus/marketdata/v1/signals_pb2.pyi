import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from perseus.marketdata.v1 import common_pb2 as _common_pb2
from perseus.marketdata.v1 import indicators_pb2 as _indicators_pb2
from perseus.marketdata.v1 import visibility_pb2 as _visibility_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignalDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_DIRECTION_UNSPECIFIED: _ClassVar[SignalDirection]
    SIGNAL_DIRECTION_BULLISH: _ClassVar[SignalDirection]
    SIGNAL_DIRECTION_BEARISH: _ClassVar[SignalDirection]

class SignalStrength(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_STRENGTH_UNSPECIFIED: _ClassVar[SignalStrength]
    SIGNAL_STRENGTH_WEAK: _ClassVar[SignalStrength]
    SIGNAL_STRENGTH_MODERATE: _ClassVar[SignalStrength]
    SIGNAL_STRENGTH_STRONG: _ClassVar[SignalStrength]
    SIGNAL_STRENGTH_EXTREME: _ClassVar[SignalStrength]
SIGNAL_DIRECTION_UNSPECIFIED: SignalDirection
SIGNAL_DIRECTION_BULLISH: SignalDirection
SIGNAL_DIRECTION_BEARISH: SignalDirection
SIGNAL_STRENGTH_UNSPECIFIED: SignalStrength
SIGNAL_STRENGTH_WEAK: SignalStrength
SIGNAL_STRENGTH_MODERATE: SignalStrength
SIGNAL_STRENGTH_STRONG: SignalStrength
SIGNAL_STRENGTH_EXTREME: SignalStrength

class TradeSignal(_message.Message):
    __slots__ = ("id", "symbol", "exchange", "timeframe", "signal_type", "direction", "strength", "price", "timestamp", "alert_type", "trigger_value", "signal_delta", "trigger_label", "source_exchange_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ALERT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_DELTA_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_LABEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    symbol: str
    exchange: str
    timeframe: _common_pb2.Timeframe
    signal_type: str
    direction: SignalDirection
    strength: SignalStrength
    price: str
    timestamp: _timestamp_pb2.Timestamp
    alert_type: str
    trigger_value: float
    signal_delta: float
    trigger_label: str
    source_exchange_id: int
    def __init__(self, id: _Optional[int] = ..., symbol: _Optional[str] = ..., exchange: _Optional[str] = ..., timeframe: _Optional[_Union[_common_pb2.Timeframe, str]] = ..., signal_type: _Optional[str] = ..., direction: _Optional[_Union[SignalDirection, str]] = ..., strength: _Optional[_Union[SignalStrength, str]] = ..., price: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., alert_type: _Optional[str] = ..., trigger_value: _Optional[float] = ..., signal_delta: _Optional[float] = ..., trigger_label: _Optional[str] = ..., source_exchange_id: _Optional[int] = ...) -> None: ...

class CurrentSignal(_message.Message):
    __slots__ = ("symbol", "exchange", "timeframe", "signal_type", "direction", "strength", "stage", "price", "timestamp", "exchange_id", "symbol_id")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_ID_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    exchange: str
    timeframe: _common_pb2.Timeframe
    signal_type: str
    direction: SignalDirection
    strength: SignalStrength
    stage: _indicators_pb2.MomentumStage
    price: str
    timestamp: _timestamp_pb2.Timestamp
    exchange_id: int
    symbol_id: int
    def __init__(self, symbol: _Optional[str] = ..., exchange: _Optional[str] = ..., timeframe: _Optional[_Union[_common_pb2.Timeframe, str]] = ..., signal_type: _Optional[str] = ..., direction: _Optional[_Union[SignalDirection, str]] = ..., strength: _Optional[_Union[SignalStrength, str]] = ..., stage: _Optional[_Union[_indicators_pb2.MomentumStage, str]] = ..., price: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exchange_id: _Optional[int] = ..., symbol_id: _Optional[int] = ...) -> None: ...
