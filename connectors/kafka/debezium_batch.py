"""The JSON of ``format: debezium`` row images for a whole Arrow batch, column by column (the snapshot and
incremental path of :class:`connectors.kafka.debezium.DebeziumTable`).

A dict and a ``json.dumps`` per row cost ~100 µs a row. Here each column becomes the JSON text of every row's
value at once: integers, booleans, dates, microsecond times and timestamps by Arrow's casts to text, zoned
timestamps by Arrow's cast to text, text by the C string encoder, precise decimals from the Arrow buffer's
unscaled integers; any other column (floats, binary, variable-scale decimals, millisecond temporals, a value
outside Python's dates) goes value by value through the same converter the event path uses. The texts are then
joined per row with the field names between them. tests/connectors/test_kafka_debezium.py checks that the rows
are those of the event path.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from itertools import repeat
from json.encoder import encode_basestring
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from copyjob.connectors.kafka.debezium_types import unscaled_bytes

from copyjob.core.schema import Column, arrow_type

Convert = Callable[[Any], Any]
Dump = Callable[[Any], str]
_MIN_US = -62_135_596_800_000_000
"""0001-01-01T00:00:00Z in µs since 1970: Arrow and Python agree on timestamps from there …"""
_END_US = 253_402_300_800_000_000
"""… to 10000-01-01 (copyjob.core.temporal carries infinity and other years beyond)."""
_INT_TEXT = {"int16", "int32", "int64", "bool"}
_AS_INTEGERS = {"io.debezium.time.Date": pa.int32(), "io.debezium.time.MicroTime": pa.int64(),
                "io.debezium.time.MicroTimestamp": pa.int64()}
_STRINGS = {"string", "uuid", "json"}


def images(batch: pa.RecordBatch, columns: Sequence[tuple[Column, dict[str, Any], Convert | None]],
           dump: Dump) -> list[str]:
    """Per row, the JSON object of ``columns`` (each with its Connect schema and payload converter);
    ``dump`` makes the JSON text of a converted value."""
    if not columns:
        return ["{}"] * batch.num_rows
    parts: list[Any] = []
    for i, (column, schema, convert) in enumerate(columns):
        parts.append(repeat(("{" if i == 0 else ",") + encode_basestring(column.name) + ":"))
        parts.append(column_texts(_array(batch, column), column, schema, convert, dump))
    parts.append(repeat("}"))
    return list(map("".join, zip(*parts, strict=False)))  # the constant parts repeat without end


def column_texts(array: pa.Array, column: Column, schema: dict[str, Any], convert: Convert | None,
                 dump: Dump) -> list[str]:
    """The JSON text of every value of one column (``null`` for nulls)."""
    texts = arrow_texts(array, column, schema, convert)
    if texts is not None:
        return texts
    kind = column.type.kind
    values = python_values(array)
    if kind in _STRINGS:
        return ["null" if v is None else encode_basestring(v if isinstance(v, str) else str(v)) for v in values]
    if convert is None:
        return ["null" if v is None else dump(v) for v in values]
    return ["null" if v is None else dump(convert(v)) for v in values]


def arrow_texts(array: pa.Array, column: Column, schema: dict[str, Any], convert: Convert | None) -> list[str] | None:
    """The texts of a column Arrow's kernels format as Debezium does (integers, booleans, the microsecond and day
    temporals, zoned timestamps of six digits, decimal128): None for any other."""
    kind, name = column.type.kind, schema.get("name")
    if kind in _INT_TEXT and not pa.types.is_dictionary(array.type):
        return _filled(pc.cast(array, pa.string()))
    if name in _AS_INTEGERS and _arrow_temporal(array):
        return _filled(pc.cast(pc.cast(array, _AS_INTEGERS[name]), pa.string()))
    if name == "io.debezium.time.ZonedTimestamp" and _zoned_micros(array, convert):
        # the UTC wall time formatted without a time zone: a quarter of strftime's time (no zone database)
        utc = pc.cast(pc.cast(array, pa.int64()), pa.timestamp("us"))
        texts = pc.utf8_replace_slice(pc.cast(utc, pa.string()), 10, 11, "T")  # "2024-01-02 03:04:05.000000"
        return _filled(pc.binary_join_element_wise('"', texts, 'Z"', ""))
    if name == "org.apache.kafka.connect.data.Decimal" and isinstance(array.type, pa.Decimal128Type):
        return _decimals(array)
    return None


def arrow_formats(schema: dict[str, Any], convert: Convert | None) -> bool:
    """Whether :func:`arrow_texts` formats the temporal or decimal column of this Connect schema (given Arrow's
    date32, time64/timestamp in µs or decimal128 data)."""
    name = schema.get("name")
    if name == "io.debezium.time.ZonedTimestamp":
        return getattr(convert, "digits", None) == 6
    return name in _AS_INTEGERS or name == "org.apache.kafka.connect.data.Decimal"


def python_values(array: pa.Array) -> list[Any]:
    """The values as Python objects; dates, times and timestamps as the integers Arrow stores (days, µs), which
    also holds the values Python's datetime cannot (infinity, BC: copyjob.core.temporal)."""
    t = array.type
    if pa.types.is_timestamp(t):
        return pc.cast(array, pa.timestamp("us", t.tz), safe=False).cast(pa.int64()).to_pylist()
    if pa.types.is_date32(t):
        return array.cast(pa.int32()).to_pylist()
    if pa.types.is_time64(t) and t.unit == "us":
        return array.cast(pa.int64()).to_pylist()
    return array.to_pylist()


def _array(batch: pa.RecordBatch, column: Column) -> pa.Array:
    index = batch.schema.get_field_index(column.name)
    wanted = arrow_type(column.type)
    if index < 0:
        return pa.nulls(batch.num_rows, wanted)
    array = batch.column(index)
    if array.type == wanted or isinstance(array.type, pa.ExtensionType):
        return array
    try:
        return pc.cast(array, wanted, safe=not pa.types.is_timestamp(array.type))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return array  # value by value


def _arrow_temporal(array: pa.Array) -> bool:
    t = array.type
    return (pa.types.is_date32(t) or (pa.types.is_time64(t) and t.unit == "us")
            or (pa.types.is_timestamp(t) and t.unit == "us"))


def _zoned_micros(array: pa.Array, convert: Convert | None) -> bool:
    """Arrow formats the column as Debezium does: six fractional digits, years 1 to 9999."""
    if not (pa.types.is_timestamp(array.type) and array.type.unit == "us" and array.type.tz is not None):
        return False
    if getattr(convert, "digits", None) != 6:
        return False
    low, high = pc.min_max(array.cast(pa.int64())).values()
    return low.as_py() is None or (low.as_py() >= _MIN_US and high.as_py() < _END_US)


def _decimals(array: pa.Array) -> list[str]:
    """Connect Decimal: base64 of the unscaled value's shortest big-endian two's complement, from the 16-byte
    little-endian unscaled integers of the Arrow buffer (the column's scale already)."""
    raw = memoryview(array.buffers()[1]).cast("B")
    start = array.offset * 16
    valid = array.is_valid().to_pylist()
    out: list[str] = []
    for i, ok in enumerate(valid):
        if not ok:
            out.append("null")
            continue
        at = start + 16 * i
        unscaled = int.from_bytes(raw[at:at + 16], "little", signed=True)
        out.append('"' + base64.b64encode(unscaled_bytes(unscaled)).decode() + '"')
    return out


def _filled(texts: pa.Array) -> list[str]:
    out: list[str] = pc.fill_null(texts, "null").to_pylist()
    return out
