"""Values to and from JSON: watermarks keeping their type (the state store and state markers hold JSON), and
the non-finite floats that JSON has no number for."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

NON_FINITE_TEXT: dict[str, float] = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""JSON has no NaN or infinity: they are written as these strings, as Jackson (Kafka Connect's and Debezium's
JSON converter) writes them by default."""


def json_float(value: float) -> float | str:
    """A float as JSON carries it: itself when finite, else ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def float_from_json(value: Any) -> Any:
    """Inverse of :func:`json_float` (other values pass unchanged)."""
    if isinstance(value, str):
        special = NON_FINITE_TEXT.get(value)
        return float(value) if special is None else special
    return value


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
