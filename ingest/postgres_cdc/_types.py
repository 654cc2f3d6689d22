"""pgoutput sends column values in PostgreSQL's text output format: convert them to the Python values the
Arrow type of the column's logical type takes (the same values a snapshot read produces).

One converter per logical type, chosen once per column when its Relation message arrives; ``None`` means
"decode the UTF-8 text" (strings, and the types a snapshot also reads as text: uuid, json, unconstrained
numeric, arrays, enums, intervals…). The session runs with ``TimeZone=UTC``, ``DateStyle=ISO`` and
``bytea_output=hex`` so the text forms are the ones parsed here. Dates, times and timestamps Python cannot
hold (infinity, BC, after 9999, 24:00) become the integers Arrow stores for them (see ``core.temporal``).
"""

from __future__ import annotations

import binascii
import datetime as dt
import decimal
from collections.abc import Callable
from typing import Any

from copyjob.core import temporal
from copyjob.core.errors import DataError
from copyjob.core.schema import LogicalType, TableName

TextConverter = Callable[[bytes], Any]

BUILTIN_TYPES: dict[int, str] = {
    16: "bool", 17: "bytea", 18: "char", 19: "name", 20: "int8", 21: "int2", 23: "int4", 25: "text",
    26: "oid", 114: "json", 700: "float4", 701: "float8", 1042: "bpchar", 1043: "varchar", 1082: "date",
    1083: "time", 1114: "timestamp", 1184: "timestamptz", 1186: "interval", 1266: "timetz", 1700: "numeric",
    2950: "uuid", 3802: "jsonb",
}
"""Type OIDs fixed since PostgreSQL 8 (pg_type.dat): no catalog query is needed for them."""


def _bool(raw: bytes) -> bool:
    return raw == b"t"


def _decimal(raw: bytes) -> decimal.Decimal:
    return decimal.Decimal(raw.decode())


def _date(raw: bytes) -> dt.date | int:
    text = raw.decode()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:  # infinity, BC, after 9999: Arrow's days since 1970 (Arrow takes ints for date32)
        return temporal.parse_date(text)


def _time(raw: bytes) -> dt.time | int:
    text = raw.decode()
    try:
        return dt.time.fromisoformat(text)
    except ValueError:  # 24:00:00: Arrow's microseconds since midnight
        return temporal.parse_time(text)


def _timestamp(raw: bytes) -> dt.datetime | int:
    text = raw.decode()
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:  # infinity, BC, after 9999: Arrow's microseconds since 1970
        return temporal.parse_timestamp(text)


def _bytea(raw: bytes) -> bytes:
    return binascii.unhexlify(raw[2:])  # hex format: \x0102…


_BY_KIND: dict[str, TextConverter | None] = {
    "int16": int, "int32": int, "int64": int, "float32": float, "float64": float, "bool": _bool,
    "date": _date, "time": _time, "timestamp": _timestamp, "timestamptz": _timestamp, "binary": _bytea,
    "string": None, "uuid": None, "json": None,
}


def conversion_error(table: TableName, column: str, raw: bytes, exc: Exception) -> DataError:
    """A value a column's converter refused: names the table (the orchestrator fails it alone), the column and
    the start of the text."""
    return DataError(f"{table}: cannot convert the value {raw[:60]!r} of column {column!r}: {exc}", table=table)


def text_converter(t: LogicalType) -> TextConverter | None:
    """How a text value of a column of logical type ``t`` becomes a Python value (None: keep the text)."""
    if t.kind == "decimal":
        return _decimal if t.precision is not None else None  # unconstrained numeric travels as text
    return _BY_KIND.get(t.kind)
