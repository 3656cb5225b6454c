from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class Timeframe(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIMEFRAME_UNSPECIFIED: _ClassVar[Timeframe]
    TIMEFRAME_1M: _ClassVar[Timeframe]
    TIMEFRAME_5M: _ClassVar[Timeframe]
    TIMEFRAME_15M: _ClassVar[Timeframe]
    TIMEFRAME_1H: _ClassVar[Timeframe]
    TIMEFRAME_4H: _ClassVar[Timeframe]
    TIMEFRAME_1D: _ClassVar[Timeframe]

class RuntimeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNTIME_MODE_UNSPECIFIED: _ClassVar[RuntimeMode]
    RUNTIME_MODE_EXCHANGE: _ClassVar[RuntimeMode]
    RUNTIME_MODE_PW_HOST: _ClassVar[RuntimeMode]
TIMEFRAME_UNSPECIFIED: Timeframe
TIMEFRAME_1M: Timeframe
TIMEFRAME_5M: Timeframe
TIMEFRAME_15M: Timeframe
TIMEFRAME_1H: Timeframe
TIMEFRAME_4H: Timeframe
TIMEFRAME_1D: Timeframe
RUNTIME_MODE_UNSPECIFIED: RuntimeMode
RUNTIME_MODE_EXCHANGE: RuntimeMode
RUNTIME_MODE_PW_HOST: RuntimeMode
