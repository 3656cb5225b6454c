"""Public JSON from protobuf, driven only by the ``(visibility)`` option of each field.

This is the one whitelist of both gateways (CONTRACT.md, Whitelisting): a
field reaches a public body only when its ``.proto`` declaration says
``VISIBILITY_PUBLIC``. Nothing here names a field. Pure code, no I/O.

The mapping, per field kind:

- strings, bools and integers as they are (prices and volumes are decimal
  strings in the proto already, so no digit is ever rounded);
- enums by their value name without the enum's prefix, lower case
  (``TIMEFRAME_1H`` → ``"1h"``), ``UNSPECIFIED`` as ``null``;
- ``google.protobuf.Timestamp`` as ISO-8601 UTC (``2026-12-02T06:21:00Z``,
  with a fraction only when there is one), unset as ``null``;
- unset messages and unset ``optional`` scalars as ``null``; zero values of
  plain scalars stay (``0``, ``""``, ``false``): a public field never
  disappears because its value is the default;
- repeated fields as lists, maps as objects, nested messages recursively.

:func:`public_schema` gives the JSON Schema of the same projection, so the
OpenAPI and AsyncAPI documents can never disagree with the bodies.
A projector is compiled once per message type and cached: one generated function per type that builds the
object in a single dictionary display (from the descriptor alone, so it names no field either), about four
times faster than a loop over per-field readers; a 100-candle body is read often enough on a cache miss for
that to be most of the REST gateway's CPU (issue 18.5).
"""

from __future__ import annotations

import datetime as dt
import keyword
import time
from collections.abc import Callable
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.descriptor_pb2 import FieldOptions
from google.protobuf.message import Message

from perseus.marketdata.v1 import visibility_pb2

TIMESTAMP = "google.protobuf.Timestamp"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
if TYPE_CHECKING:
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor

# protoc's .pyi types an extension as a plain FieldDescriptor; FieldOptions.Extensions wants the extension type.
_VISIBILITY = cast("_ExtensionFieldDescriptor[FieldOptions, int]", visibility_pb2.visibility)
_PUBLIC = visibility_pb2.VISIBILITY_PUBLIC

Projector = Callable[[Message], dict[str, Any]]


def descriptor_of(message: Message | type[Message]) -> Descriptor:
    """The descriptor of a message (type) as types-protobuf's :class:`Descriptor`.

    The stubs type ``Message.DESCRIPTOR`` as the union of the pure-Python and the upb descriptor class; at
    run time it is upb's, which has every attribute read here. One cast, here, instead of one per caller.
    """
    return cast(Descriptor, message.DESCRIPTOR)


def message_type(field: FieldDescriptor) -> Descriptor:
    """The message type of a message (or map) field; only called for fields of TYPE_MESSAGE."""
    assert field.message_type is not None, field.full_name
    return field.message_type


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field; only called for fields of TYPE_ENUM."""
    assert field.enum_type is not None, field.full_name
    return field.enum_type


def is_public(field: FieldDescriptor) -> bool:
    """True when the field's declaration says VISIBILITY_PUBLIC (an undeclared field is not public)."""
    options = field.GetOptions()
    return options.HasExtension(_VISIBILITY) and options.Extensions[_VISIBILITY] == _PUBLIC


def public_fields(descriptor: Descriptor) -> list[FieldDescriptor]:
    return [field for field in descriptor.fields if is_public(field)]


def enum_names(enum: EnumDescriptor) -> dict[int, str | None]:
    """Public spelling of each value: the name without the enum's prefix, lower case."""
    prefix = _enum_prefix(enum)
    return {
        value.number: None if value.number == 0 else value.name.removeprefix(prefix).lower() for value in enum.values
    }


def public_enum_values(enum: EnumDescriptor) -> list[str]:
    return [name for name in enum_names(enum).values() if name is not None]


# Years 1000-9999, where ``time.gmtime`` and ``%04d`` spell a second as ``strftime`` does; outside them
# (``strftime`` does not pad a year below 1000) the slower datetime path keeps the same spelling.
_FAST_SECONDS = range(-30_610_224_000, 253_402_300_800)


def timestamp_text(seconds: int, nanos: int) -> str:
    if seconds in _FAST_SECONDS:
        t = time.gmtime(seconds)
        text = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    else:
        text = (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:  # milli-, micro- or nanoseconds, whichever is exact
        fraction = f"{nanos:09d}"
        digits = 3 if fraction.endswith("000000") else 6 if fraction.endswith("000") else 9
        text += "." + fraction[:digits]
    return text + "Z"


# The same few open times are spelled over and over (a candle read is 100 of them, and reads overlap).
_recent_timestamp_text = lru_cache(maxsize=8192)(timestamp_text)


def to_public(message: Message) -> dict[str, Any]:
    """The public JSON object of ``message``: its PUBLIC fields only."""
    return projector(descriptor_of(message))(message)


@cache
def projector(descriptor: Descriptor) -> Projector:
    """A function that projects messages of ``descriptor``'s type (compiled once).

    The function is generated from the descriptor: ``{"name": m.name, "when": _c3(m.when) if
    m.HasField("when") else None, ...}``, one entry per PUBLIC field, with the same per-field rules as
    :func:`_field_reader` (which still reads repeated and map fields)."""
    names: dict[str, Any] = {}
    entries = []
    for i, field in enumerate(public_fields(descriptor)):
        entries.append(f"{field.name!r}: {_field_expression(field, i, names)}")
    source = "def project(m):\n    return {" + ", ".join(entries) + "}\n"
    exec(compile(source, f"<projector {descriptor.full_name}>", "exec"), names)  # our own text, from the descriptor
    project: Projector = names["project"]
    return project


def _field_expression(field: FieldDescriptor, i: int, names: dict[str, Any]) -> str:
    """The Python expression reading ``field`` of ``m``; the helpers it calls are put into ``names``."""
    if _is_repeated(field):  # lists and maps: the reader's comprehension
        names[f"_r{i}"] = _field_reader(field)
        return f"_r{i}(m)"
    name = field.name
    value = f"m.{name}" if name.isidentifier() and not keyword.iskeyword(name) else f"getattr(m, {name!r})"
    convert = _value_converter(field)
    if convert is not _identity:
        names[f"_c{i}"] = convert
        value = f"_c{i}({value})"
    if field.type == FieldDescriptor.TYPE_MESSAGE or field.has_presence:
        return f"({value} if m.HasField({name!r}) else None)"
    return value


def _field_reader(field: FieldDescriptor) -> Callable[[Message], Any]:
    name = field.name
    if _is_map(field):
        entry = message_type(field).fields_by_name
        key_field, value_field = entry["key"], entry["value"]
        convert_value = _value_converter(value_field)
        convert_key = str if key_field.type != FieldDescriptor.TYPE_STRING else (lambda k: k)
        return lambda m: {convert_key(k): convert_value(v) for k, v in getattr(m, name).items()}
    convert = _value_converter(field)
    if _is_repeated(field):
        return lambda m: [convert(v) for v in getattr(m, name)]
    if field.type == FieldDescriptor.TYPE_MESSAGE or field.has_presence:
        return lambda m: convert(getattr(m, name)) if m.HasField(name) else None
    return lambda m: convert(getattr(m, name))


def _value_converter(field: FieldDescriptor) -> Callable[[Any], Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        nested = message_type(field)
        if nested.full_name == TIMESTAMP:
            return lambda ts: _recent_timestamp_text(ts.seconds, ts.nanos)
        return lambda m: projector(nested)(m)
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = enum_names(enum_type(field))
        return lambda number: names.get(number)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda b: b.hex()
    return _identity


def _identity(value: Any) -> Any:
    return value


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _is_map(field: FieldDescriptor) -> bool:
    return _is_repeated(field) and field.message_type is not None and field.message_type.GetOptions().map_entry


def _enum_prefix(enum: EnumDescriptor) -> str:
    """``TIMEFRAME_`` for ``Timeframe``, ``SIGNAL_DIRECTION_`` for ``SignalDirection``."""
    snake = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(enum.name)).upper()
    return snake + "_"


# JSON Schema of the projection (OpenAPI 3.1 and AsyncAPI 3 both use JSON Schema 2020-12).

_INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_NUMBER_TYPES = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})

SchemaRef = Callable[[Descriptor], dict[str, Any]]


def inline_ref(descriptor: Descriptor) -> dict[str, Any]:
    return public_schema(descriptor)


def public_schema(descriptor: Descriptor, ref: SchemaRef = inline_ref) -> dict[str, Any]:
    """JSON Schema of :func:`to_public` for messages of ``descriptor``; ``ref`` renders nested messages
    (inline by default, or a ``$ref`` into a components section)."""
    fields = public_fields(descriptor)
    return {
        "type": "object",
        "properties": {field.name: _field_schema(field, ref) for field in fields},
        "required": [field.name for field in fields],
        "additionalProperties": False,
    }


def _field_schema(field: FieldDescriptor, ref: SchemaRef) -> dict[str, Any]:
    if _is_map(field):
        value_field = message_type(field).fields_by_name["value"]
        return {"type": "object", "additionalProperties": _value_schema(value_field, ref)}
    value = _value_schema(field, ref)
    if _is_repeated(field):
        return {"type": "array", "items": value}
    nullable = field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_ENUM) or field.has_presence
    return {"anyOf": [value, {"type": "null"}]} if nullable else value


def _value_schema(field: FieldDescriptor, ref: SchemaRef) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        nested = message_type(field)
        if nested.full_name == TIMESTAMP:
            return {"type": "string", "format": "date-time"}
        return ref(nested)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return {"type": "string", "enum": public_enum_values(enum_type(field))}
    if field.type == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if field.type in _INTEGER_TYPES:
        return {"type": "integer"}
    if field.type in _NUMBER_TYPES:
        return {"type": "number"}
    return {"type": "string"}
