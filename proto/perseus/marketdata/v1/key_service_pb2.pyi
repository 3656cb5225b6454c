import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from perseus.marketdata.v1 import visibility_pb2 as _visibility_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_TIER_UNSPECIFIED: _ClassVar[KeyTier]
    KEY_TIER_FREE: _ClassVar[KeyTier]
    KEY_TIER_PRO: _ClassVar[KeyTier]
    KEY_TIER_INTERNAL: _ClassVar[KeyTier]
    KEY_TIER_ADMIN: _ClassVar[KeyTier]
KEY_TIER_UNSPECIFIED: KeyTier
KEY_TIER_FREE: KeyTier
KEY_TIER_PRO: KeyTier
KEY_TIER_INTERNAL: KeyTier
KEY_TIER_ADMIN: KeyTier

class ApiKey(_message.Message):
    __slots__ = ("id", "name", "tier", "rate_limit_per_minute", "max_connections", "prefix", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    tier: KeyTier
    rate_limit_per_minute: int
    max_connections: int
    prefix: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., tier: _Optional[_Union[KeyTier, str]] = ..., rate_limit_per_minute: _Optional[int] = ..., max_connections: _Optional[int] = ..., prefix: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AuthenticateKeyRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class AuthenticateKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...
