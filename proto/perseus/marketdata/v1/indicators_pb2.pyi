import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from perseus.marketdata.v1 import common_pb2 as _common_pb2
from perseus.marketdata.v1 import visibility_pb2 as _visibility_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MomentumStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MOMENTUM_STAGE_UNSPECIFIED: _ClassVar[MomentumStage]
    MOMENTUM_STAGE_OVERSOLD: _ClassVar[MomentumStage]
    MOMENTUM_STAGE_REBOUNDING: _ClassVar[MomentumStage]
    MOMENTUM_STAGE_RALLYING: _ClassVar[MomentumStage]
    MOMENTUM_STAGE_OVERBOUGHT: _ClassVar[MomentumStage]
    MOMENTUM_STAGE_RETRACING: _ClassVar[MomentumStage]
    MOMENTUM_STAGE_REVERSING: _ClassVar[MomentumStage]
    MOMENTUM_STAGE_RANGING: _ClassVar[MomentumStage]

class ValueZone(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_ZONE_UNSPECIFIED: _ClassVar[ValueZone]
    VALUE_ZONE_DEEP_NEGATIVE: _ClassVar[ValueZone]
    VALUE_ZONE_NEGATIVE: _ClassVar[ValueZone]
    VALUE_ZONE_NEUTRAL: _ClassVar[ValueZone]
    VALUE_ZONE_POSITIVE: _ClassVar[ValueZone]
    VALUE_ZONE_ELEVATED: _ClassVar[ValueZone]
    VALUE_ZONE_OVERBOUGHT: _ClassVar[ValueZone]
MOMENTUM_STAGE_UNSPECIFIED: MomentumStage
MOMENTUM_STAGE_OVERSOLD: MomentumStage
MOMENTUM_STAGE_REBOUNDING: MomentumStage
MOMENTUM_STAGE_RALLYING: MomentumStage
MOMENTUM_STAGE_OVERBOUGHT: MomentumStage
MOMENTUM_STAGE_RETRACING: MomentumStage
MOMENTUM_STAGE_REVERSING: MomentumStage
MOMENTUM_STAGE_RANGING: MomentumStage
VALUE_ZONE_UNSPECIFIED: ValueZone
VALUE_ZONE_DEEP_NEGATIVE: ValueZone
VALUE_ZONE_NEGATIVE: ValueZone
VALUE_ZONE_NEUTRAL: ValueZone
VALUE_ZONE_POSITIVE: ValueZone
VALUE_ZONE_ELEVATED: ValueZone
VALUE_ZONE_OVERBOUGHT: ValueZone

class MacdV(_message.Message):
    __slots__ = ("exchange", "symbol", "timeframe", "timestamp", "macd_v", "signal", "histogram", "stage", "zone", "fast_ema", "slow_ema", "atr", "fast_period", "slow_period", "signal_period", "atr_period", "exchange_id", "symbol_id")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    MACD_V_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    FAST_EMA_FIELD_NUMBER: _ClassVar[int]
    SLOW_EMA_FIELD_NUMBER: _ClassVar[int]
    ATR_FIELD_NUMBER: _ClassVar[int]
    FAST_PERIOD_FIELD_NUMBER: _ClassVar[int]
    SLOW_PERIOD_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_PERIOD_FIELD_NUMBER: _ClassVar[int]
    ATR_PERIOD_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_ID_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    timeframe: _common_pb2.Timeframe
    timestamp: _timestamp_pb2.Timestamp
    macd_v: float
    signal: float
    histogram: float
    stage: MomentumStage
    zone: ValueZone
    fast_ema: float
    slow_ema: float
    atr: float
    fast_period: int
    slow_period: int
    signal_period: int
    atr_period: int
    exchange_id: int
    symbol_id: int
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., timeframe: _Optional[_Union[_common_pb2.Timeframe, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., macd_v: _Optional[float] = ..., signal: _Optional[float] = ..., histogram: _Optional[float] = ..., stage: _Optional[_Union[MomentumStage, str]] = ..., zone: _Optional[_Union[ValueZone, str]] = ..., fast_ema: _Optional[float] = ..., slow_ema: _Optional[float] = ..., atr: _Optional[float] = ..., fast_period: _Optional[int] = ..., slow_period: _Optional[int] = ..., signal_period: _Optional[int] = ..., atr_period: _Optional[int] = ..., exchange_id: _Optional[int] = ..., symbol_id: _Optional[int] = ...) -> None: ...
