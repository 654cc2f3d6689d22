"""Column values to and from the JSON envelope (``format: json``), typed by the column's logical type.

JSON carries what a person reads easily: decimals as strings (exact), timestamps, dates and times as ISO 8601
(timestamptz with ``+00:00``), binary as base64, uuid and json as strings; numbers and booleans as themselves,
except NaN and ±infinity, which JSON has no number for: the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from collections.abc import Callable, Mapping
from typing import Any

from copyjob.core.schema import TableSchema
from copyjob.core.values import float_from_json, json_float


def to_json_value(value: Any) -> Any:
    if isinstance(value, float):
        return json_float(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return str(value)


def _timestamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _timestamptz(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _iso_or_integer(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    """ISO text, or the integer a value Python cannot hold (infinity, BC, 24:00) is carried as (days or
    microseconds since 1970 or midnight: see copyjob.core.temporal), which Arrow takes as it is."""
    return lambda v: v if isinstance(v, int) else parse(v)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "decimal": lambda v: decimal.Decimal(v) if isinstance(v, str) else v,
    "date": _iso_or_integer(dt.date.fromisoformat),
    "time": _iso_or_integer(dt.time.fromisoformat),
    "timestamp": _iso_or_integer(_timestamp),
    "timestamptz": _iso_or_integer(_timestamptz),
    "binary": lambda v: base64.b64decode(v),
    "float32": float_from_json,
    "float64": float_from_json,
}


def json_row_parser(schema: TableSchema) -> Callable[[Mapping[str, Any] | None], dict[str, Any] | None]:
    """A function turning a JSON row image back into typed Python values (columns it does not know pass)."""
    parsers: dict[str, Callable[[Any], Any]] = {}
    for c in schema.columns:
        parser = _PARSERS.get(c.type.kind)
        if parser is not None and not (c.type.kind == "decimal" and c.type.precision is None):
            parsers[c.name] = parser

    def parse(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        return {k: (parsers[k](v) if v is not None and k in parsers else v) for k, v in row.items()}

    return parse
