import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from perseus.marketdata.v1 import candles_pb2 as _candles_pb2
from perseus.marketdata.v1 import common_pb2 as _common_pb2
from perseus.marketdata.v1 import indicators_pb2 as _indicators_pb2
from perseus.marketdata.v1 import market_pb2 as _market_pb2
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

class DependencyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPENDENCY_STATE_UNSPECIFIED: _ClassVar[DependencyState]
    DEPENDENCY_STATE_UP: _ClassVar[DependencyState]
    DEPENDENCY_STATE_DOWN: _ClassVar[DependencyState]

class ComponentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPONENT_STATE_UNSPECIFIED: _ClassVar[ComponentState]
    COMPONENT_STATE_UP: _ClassVar[ComponentState]
    COMPONENT_STATE_DEGRADED: _ClassVar[ComponentState]

class VenueState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VENUE_STATE_UNSPECIFIED: _ClassVar[VenueState]
    VENUE_STATE_CONNECTING: _ClassVar[VenueState]
    VENUE_STATE_CONNECTED: _ClassVar[VenueState]
    VENUE_STATE_RECONNECTING: _ClassVar[VenueState]
    VENUE_STATE_STOPPED: _ClassVar[VenueState]
DEPENDENCY_STATE_UNSPECIFIED: DependencyState
DEPENDENCY_STATE_UP: DependencyState
DEPENDENCY_STATE_DOWN: DependencyState
COMPONENT_STATE_UNSPECIFIED: ComponentState
COMPONENT_STATE_UP: ComponentState
COMPONENT_STATE_DEGRADED: ComponentState
VENUE_STATE_UNSPECIFIED: VenueState
VENUE_STATE_CONNECTING: VenueState
VENUE_STATE_CONNECTED: VenueState
VENUE_STATE_RECONNECTING: VenueState
VENUE_STATE_STOPPED: VenueState

class ListExchangesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExchangesResponse(_message.Message):
    __slots__ = ("exchanges",)
    EXCHANGES_FIELD_NUMBER: _ClassVar[int]
    exchanges: _containers.RepeatedCompositeFieldContainer[_market_pb2.Exchange]
    def __init__(self, exchanges: _Optional[_Iterable[_Union[_market_pb2.Exchange, _Mapping]]] = ...) -> None: ...

class ListSymbolsRequest(_message.Message):
    __slots__ = ("exchange",)
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    def __init__(self, exchange: _Optional[str] = ...) -> None: ...

class ListSymbolsResponse(_message.Message):
    __slots__ = ("symbols",)
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedCompositeFieldContainer[_market_pb2.Symbol]
    def __init__(self, symbols: _Optional[_Iterable[_Union[_market_pb2.Symbol, _Mapping]]] = ...) -> None: ...

class GetCandlesRequest(_message.Message):
    __slots__ = ("exchange", "symbol", "timeframe", "limit", "start_time", "end_time")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    timeframe: _common_pb2.Timeframe
    limit: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., timeframe: _Optional[_Union[_common_pb2.Timeframe, str]] = ..., limit: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetCandlesResponse(_message.Message):
    __slots__ = ("candles",)
    CANDLES_FIELD_NUMBER: _ClassVar[int]
    candles: _containers.RepeatedCompositeFieldContainer[_candles_pb2.Candle]
    def __init__(self, candles: _Optional[_Iterable[_Union[_candles_pb2.Candle, _Mapping]]] = ...) -> None: ...

class GetLatestPricesRequest(_message.Message):
    __slots__ = ("symbols",)
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class GetLatestPricesResponse(_message.Message):
    __slots__ = ("prices", "cached")
    PRICES_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[_prices_pb2.LatestPrice]
    cached: bool
    def __init__(self, prices: _Optional[_Iterable[_Union[_prices_pb2.LatestPrice, _Mapping]]] = ..., cached: _Optional[bool] = ...) -> None: ...

class GetPriceRangeRequest(_message.Message):
    __slots__ = ("symbol", "start_time", "end_time", "interval", "source", "limit")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    interval: _common_pb2.Timeframe
    source: str
    limit: int
    def __init__(self, symbol: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interval: _Optional[_Union[_common_pb2.Timeframe, str]] = ..., source: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class GetPriceRangeResponse(_message.Message):
    __slots__ = ("buckets",)
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[_prices_pb2.PriceBucket]
    def __init__(self, buckets: _Optional[_Iterable[_Union[_prices_pb2.PriceBucket, _Mapping]]] = ...) -> None: ...

class GetConsensusRequest(_message.Message):
    __slots__ = ("symbols", "time")
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    time: _timestamp_pb2.Timestamp
    def __init__(self, symbols: _Optional[_Iterable[str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetConsensusResponse(_message.Message):
    __slots__ = ("prices",)
    PRICES_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[_prices_pb2.ConsensusPrice]
    def __init__(self, prices: _Optional[_Iterable[_Union[_prices_pb2.ConsensusPrice, _Mapping]]] = ...) -> None: ...

class GetIndicatorRequest(_message.Message):
    __slots__ = ("exchange", "symbol", "timeframe")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    timeframe: _common_pb2.Timeframe
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., timeframe: _Optional[_Union[_common_pb2.Timeframe, str]] = ...) -> None: ...

class GetIndicatorResponse(_message.Message):
    __slots__ = ("indicator",)
    INDICATOR_FIELD_NUMBER: _ClassVar[int]
    indicator: _indicators_pb2.MacdV
    def __init__(self, indicator: _Optional[_Union[_indicators_pb2.MacdV, _Mapping]] = ...) -> None: ...

class GetSignalRequest(_message.Message):
    __slots__ = ("exchange", "symbol", "timeframe")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    timeframe: _common_pb2.Timeframe
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., timeframe: _Optional[_Union[_common_pb2.Timeframe, str]] = ...) -> None: ...

class GetSignalResponse(_message.Message):
    __slots__ = ("signal", "current")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    signal: _signals_pb2.TradeSignal
    current: _signals_pb2.CurrentSignal
    def __init__(self, signal: _Optional[_Union[_signals_pb2.TradeSignal, _Mapping]] = ..., current: _Optional[_Union[_signals_pb2.CurrentSignal, _Mapping]] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("exchange", "symbol", "timeframe", "since_time", "page_size", "page_token")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    SINCE_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    symbol: str
    timeframe: _common_pb2.Timeframe
    since_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., timeframe: _Optional[_Union[_common_pb2.Timeframe, str]] = ..., since_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("signals", "next_page_token")
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    signals: _containers.RepeatedCompositeFieldContainer[_signals_pb2.TradeSignal]
    next_page_token: str
    def __init__(self, signals: _Optional[_Iterable[_Union[_signals_pb2.TradeSignal, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DependencyStatus(_message.Message):
    __slots__ = ("name", "state", "detail", "latency_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: DependencyState
    detail: str
    latency_ms: float
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[DependencyState, str]] = ..., detail: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class ComponentStatus(_message.Message):
    __slots__ = ("name", "state", "detail", "restarts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: ComponentState
    detail: str
    restarts: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ComponentState, str]] = ..., detail: _Optional[str] = ..., restarts: _Optional[int] = ...) -> None: ...

class VenueStatus(_message.Message):
    __slots__ = ("exchange", "state", "last_message_time")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_TIME_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    state: VenueState
    last_message_time: _timestamp_pb2.Timestamp
    def __init__(self, exchange: _Optional[str] = ..., state: _Optional[_Union[VenueState, str]] = ..., last_message_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("mode", "dependencies", "version", "exchanges", "components", "uptime_seconds", "venues", "streams", "ingest", "writers")
    MODE_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXCHANGES_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VENUES_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    INGEST_FIELD_NUMBER: _ClassVar[int]
    WRITERS_FIELD_NUMBER: _ClassVar[int]
    mode: _common_pb2.RuntimeMode
    dependencies: _containers.RepeatedCompositeFieldContainer[DependencyStatus]
    version: str
    exchanges: _containers.RepeatedScalarFieldContainer[str]
    components: _containers.RepeatedCompositeFieldContainer[ComponentStatus]
    uptime_seconds: float
    venues: _containers.RepeatedCompositeFieldContainer[VenueStatus]
    streams: StreamHubStatus
    ingest: IngestRateStatus
    writers: _containers.RepeatedCompositeFieldContainer[WriterStatus]
    def __init__(self, mode: _Optional[_Union[_common_pb2.RuntimeMode, str]] = ..., dependencies: _Optional[_Iterable[_Union[DependencyStatus, _Mapping]]] = ..., version: _Optional[str] = ..., exchanges: _Optional[_Iterable[str]] = ..., components: _Optional[_Iterable[_Union[ComponentStatus, _Mapping]]] = ..., uptime_seconds: _Optional[float] = ..., venues: _Optional[_Iterable[_Union[VenueStatus, _Mapping]]] = ..., streams: _Optional[_Union[StreamHubStatus, _Mapping]] = ..., ingest: _Optional[_Union[IngestRateStatus, _Mapping]] = ..., writers: _Optional[_Iterable[_Union[WriterStatus, _Mapping]]] = ...) -> None: ...

class StreamHubStatus(_message.Message):
    __slots__ = ("sessions", "channels")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    sessions: int
    channels: int
    def __init__(self, sessions: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class IngestRateStatus(_message.Message):
    __slots__ = ("ticks_total", "ticks_per_second", "lag_ms", "last_stored_time", "pending_price_updates")
    TICKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TICKS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_STORED_TIME_FIELD_NUMBER: _ClassVar[int]
    PENDING_PRICE_UPDATES_FIELD_NUMBER: _ClassVar[int]
    ticks_total: int
    ticks_per_second: float
    lag_ms: float
    last_stored_time: _timestamp_pb2.Timestamp
    pending_price_updates: int
    def __init__(self, ticks_total: _Optional[int] = ..., ticks_per_second: _Optional[float] = ..., lag_ms: _Optional[float] = ..., last_stored_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pending_price_updates: _Optional[int] = ...) -> None: ...

class WriterStatus(_message.Message):
    __slots__ = ("exchange", "leader", "term")
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    exchange: str
    leader: str
    term: int
    def __init__(self, exchange: _Optional[str] = ..., leader: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...
