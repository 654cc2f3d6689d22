"""Watermark values to and from JSON, keeping their type (the state store and state markers hold JSON)."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any


def encode_value(value: Any) -> tuple[Any, str | None]:
    """A JSON-safe form of ``value`` and the name of its type."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return value, "bool"
    if isinstance(value, int):
        return value, "int"
    if isinstance(value, float):
        return value, "float"
    if isinstance(value, decimal.Decimal):
        return str(value), "decimal"
    if isinstance(value, dt.datetime):
        return value.isoformat(), "datetime"
    if isinstance(value, dt.date):
        return value.isoformat(), "date"
    if isinstance(value, dt.time):
        return value.isoformat(), "time"
    if isinstance(value, bytes):
        return value.hex(), "bytes"
    return str(value), "str"


def decode_value(value: Any, type_name: str | None) -> Any:
    if value is None or type_name is None:
        return value
    if type_name == "decimal":
        return decimal.Decimal(value)
    if type_name == "datetime":
        return dt.datetime.fromisoformat(value)
    if type_name == "date":
        return dt.date.fromisoformat(value)
    if type_name == "time":
        return dt.time.fromisoformat(value)
    if type_name == "bytes":
        return bytes.fromhex(value)
    return value


def display_value(value: Any) -> str:
    """How a watermark is shown in summaries and status."""
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)
