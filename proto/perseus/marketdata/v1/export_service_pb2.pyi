import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from perseus.marketdata.v1 import candles_pb2 as _candles_pb2
from perseus.marketdata.v1 import common_pb2 as _common_pb2
from perseus.marketdata.v1 import prices_pb2 as _prices_pb2
from perseus.marketdata.v1 import visibility_pb2 as _visibility_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExportCandlesRequest(_message.Message):
    __slots__ = ("exchange", "symbol", "timeframe", "start_time", "end_time", "chunk_size")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    timeframe: _common_pb2.Timeframe
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    chunk_size: int
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., timeframe: _Optional[_Union[_common_pb2.Timeframe, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class ExportCandlesResponse(_message.Message):
    __slots__ = ("candles",)
    CANDLES_FIELD_NUMBER: _ClassVar[int]
    candles: _containers.RepeatedCompositeFieldContainer[_candles_pb2.Candle]
    def __init__(self, candles: _Optional[_Iterable[_Union[_candles_pb2.Candle, _Mapping]]] = ...) -> None: ...

class ExportTicksRequest(_message.Message):
    __slots__ = ("symbol", "source", "start_time", "end_time", "chunk_size")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    source: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    chunk_size: int
    def __init__(self, symbol: _Optional[str] = ..., source: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class ExportTicksResponse(_message.Message):
    __slots__ = ("ticks",)
    TICKS_FIELD_NUMBER: _ClassVar[int]
    ticks: _containers.RepeatedCompositeFieldContainer[_prices_pb2.PriceFeed]
    def __init__(self, ticks: _Optional[_Iterable[_Union[_prices_pb2.PriceFeed, _Mapping]]] = ...) -> None: ...
