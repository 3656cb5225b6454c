import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from perseus.marketdata.v1 import visibility_pb2 as _visibility_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExchangeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXCHANGE_STATUS_UNSPECIFIED: _ClassVar[ExchangeStatus]
    EXCHANGE_STATUS_ONLINE: _ClassVar[ExchangeStatus]
    EXCHANGE_STATUS_OFFLINE: _ClassVar[ExchangeStatus]
EXCHANGE_STATUS_UNSPECIFIED: ExchangeStatus
EXCHANGE_STATUS_ONLINE: ExchangeStatus
EXCHANGE_STATUS_OFFLINE: ExchangeStatus

class Exchange(_message.Message):
    __slots__ = ("id", "name", "display_name", "status", "simulated", "last_heartbeat_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    display_name: str
    status: ExchangeStatus
    simulated: bool
    last_heartbeat_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., display_name: _Optional[str] = ..., status: _Optional[_Union[ExchangeStatus, str]] = ..., simulated: _Optional[bool] = ..., last_heartbeat_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Symbol(_message.Message):
    __slots__ = ("id", "exchange_id", "exchange", "symbol", "base", "quote", "active")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    QUOTE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    id: int
    exchange_id: int
    exchange: str
    symbol: str
    base: str
    quote: str
    active: bool
    def __init__(self, id: _Optional[int] = ..., exchange_id: _Optional[int] = ..., exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., base: _Optional[str] = ..., quote: _Optional[str] = ..., active: _Optional[bool] = ...) -> None: ...
