import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from perseus.marketdata.v1 import visibility_pb2 as _visibility_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PriceFeed(_message.Message):
    __slots__ = ("id", "symbol", "price", "volume", "source", "timestamp", "bid", "ask", "exchange_timestamp", "worker_id", "ingested_time", "trade_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    BID_FIELD_NUMBER: _ClassVar[int]
    ASK_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    INGESTED_TIME_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    symbol: str
    price: str
    volume: str
    source: str
    timestamp: _timestamp_pb2.Timestamp
    bid: str
    ask: str
    exchange_timestamp: _timestamp_pb2.Timestamp
    worker_id: str
    ingested_time: _timestamp_pb2.Timestamp
    trade_id: str
    def __init__(self, id: _Optional[int] = ..., symbol: _Optional[str] = ..., price: _Optional[str] = ..., volume: _Optional[str] = ..., source: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bid: _Optional[str] = ..., ask: _Optional[str] = ..., exchange_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., worker_id: _Optional[str] = ..., ingested_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trade_id: _Optional[str] = ...) -> None: ...

class LatestPrice(_message.Message):
    __slots__ = ("symbol", "price", "volume", "source", "timestamp", "staleness_ms")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    price: str
    volume: str
    source: str
    timestamp: _timestamp_pb2.Timestamp
    staleness_ms: int
    def __init__(self, symbol: _Optional[str] = ..., price: _Optional[str] = ..., volume: _Optional[str] = ..., source: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., staleness_ms: _Optional[int] = ...) -> None: ...

class PriceBucket(_message.Message):
    __slots__ = ("timestamp", "open", "high", "low", "close", "volume", "num_feeds")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    NUM_FEEDS_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    open: str
    high: str
    low: str
    close: str
    volume: str
    num_feeds: int
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., open: _Optional[str] = ..., high: _Optional[str] = ..., low: _Optional[str] = ..., close: _Optional[str] = ..., volume: _Optional[str] = ..., num_feeds: _Optional[int] = ...) -> None: ...

class ConsensusPrice(_message.Message):
    __slots__ = ("symbol", "price", "median", "mean", "std_dev", "num_sources", "sources", "timestamp")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_DEV_FIELD_NUMBER: _ClassVar[int]
    NUM_SOURCES_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    price: str
    median: str
    mean: str
    std_dev: str
    num_sources: int
    sources: _containers.RepeatedScalarFieldContainer[str]
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, symbol: _Optional[str] = ..., price: _Optional[str] = ..., median: _Optional[str] = ..., mean: _Optional[str] = ..., std_dev: _Optional[str] = ..., num_sources: _Optional[int] = ..., sources: _Optional[_Iterable[str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
