from perseus.marketdata.v1 import prices_pb2 as _prices_pb2
from perseus.marketdata.v1 import visibility_pb2 as _visibility_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INGEST_STATUS_UNSPECIFIED: _ClassVar[IngestStatus]
    INGEST_STATUS_SUCCESS: _ClassVar[IngestStatus]
    INGEST_STATUS_PARTIAL: _ClassVar[IngestStatus]
    INGEST_STATUS_FAILED: _ClassVar[IngestStatus]
INGEST_STATUS_UNSPECIFIED: IngestStatus
INGEST_STATUS_SUCCESS: IngestStatus
INGEST_STATUS_PARTIAL: IngestStatus
INGEST_STATUS_FAILED: IngestStatus

class IngestPricesRequest(_message.Message):
    __slots__ = ("worker_id", "batch_id", "feeds")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    batch_id: str
    feeds: _containers.RepeatedCompositeFieldContainer[_prices_pb2.PriceFeed]
    def __init__(self, worker_id: _Optional[str] = ..., batch_id: _Optional[str] = ..., feeds: _Optional[_Iterable[_Union[_prices_pb2.PriceFeed, _Mapping]]] = ...) -> None: ...

class FeedError(_message.Message):
    __slots__ = ("index", "field", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    field: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class IngestPricesResponse(_message.Message):
    __slots__ = ("status", "ingested", "failed", "errors")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INGESTED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    status: IngestStatus
    ingested: int
    failed: int
    errors: _containers.RepeatedCompositeFieldContainer[FeedError]
    def __init__(self, status: _Optional[_Union[IngestStatus, str]] = ..., ingested: _Optional[int] = ..., failed: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[FeedError, _Mapping]]] = ...) -> None: ...
