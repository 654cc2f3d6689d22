"""The canonical text of a value, as ``copyjob verify`` hashes it, computed in Python.

Every system spells a row's values as this text, so that values equal after the documented type conversions
hash equally. The SQL dialects (``connectors/_digest_sql.py``) produce the same text inside the database
for the kinds they can; for the others (floats, JSON, unconstrained decimals; every kind in SQLite, where
these functions run inside the database as user functions) this module is the definition:

- integers: decimal digits; strings: as stored; bool: ``t`` / ``f``;
- decimal(p,s): exactly ``s`` decimals (``1.50``); unconstrained decimal: no trailing zeros (``1.5``);
- float64: Python's shortest round-trip ``repr`` (``0.1``, ``100.0``, ``1e+16``); float32: the shortest
  text that round-trips as a float32, then as float64; ``NaN``, ``Infinity``, ``-Infinity``; -0.0 is 0.0;
- date ``YYYY-MM-DD``; time ``HH:MM:SS.ffffff``; timestamp and timestamptz ``YYYY-MM-DD HH:MM:SS.ffffff``
  (timestamptz in UTC, so a DATETIME holding UTC equals it);
- binary: lowercase hex; uuid: lowercase text; JSON: sorted keys, no spaces (``{"a":1,"b":[2]}``).

A row's text joins its columns' texts with U+001F; a NULL is U+001E. Its hash is the first 8 bytes of the
MD5 of the UTF-8 text, as an unsigned integer; a range's digest is their sum modulo 2**64 (order-free, so
no ORDER BY is needed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import struct
import uuid
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from copyjob.core.schema import LogicalType, parse_logical

SEPARATOR = "\x1f"
NULL_MARK = "\x1e"
MODULUS = 2**64

TRUE_TEXTS = frozenset({"1", "t", "true", "y", "yes", "on"})


def row_text(texts: Sequence[str | None]) -> str:
    return SEPARATOR.join(NULL_MARK if t is None else t for t in texts)


def text_hash(text: str) -> int:
    """The first 8 bytes of the MD5 of ``text`` (UTF-8), big-endian unsigned."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big")


def canonical_text(kind: LogicalType, value: Any) -> str | None:
    """The canonical text of ``value`` read as a value of ``kind`` (the source column's logical type)."""
    if value is None:
        return None
    return _BY_KIND.get(kind.kind, _string)(kind, value)


def canonical_by_spec(spec: str, value: Any) -> str | None:
    """:func:`canonical_text` for a type spelled as text (``decimal(12,2)``): SQLite's user function."""
    return canonical_text(parse_logical(spec), value)


def _string(kind: LogicalType, value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _integer(kind: LogicalType, value: Any) -> str:
    if isinstance(value, str):
        return str(int(Decimal(value)))
    return str(int(value))


def _bool(kind: LogicalType, value: Any) -> str:
    if isinstance(value, str):
        return "t" if value.strip().lower() in TRUE_TEXTS else "f"
    return "t" if value else "f"


def _float(kind: LogicalType, value: Any) -> str:
    f = float(value)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0:
        return "0.0"
    if kind.kind == "float32":
        f = _shortest_float32(f)
    return repr(f)


def _shortest_float32(f: float) -> float:
    """The float64 of the shortest decimal that reads back as the same float32 (``1.1`` for 1.100000023841858)."""
    try:
        single = struct.unpack("f", struct.pack("f", f))[0]
    except OverflowError:
        return f
    for digits in range(1, 10):
        candidate = float(f"{single:.{digits}g}")
        if struct.unpack("f", struct.pack("f", candidate))[0] == single:
            return candidate
    return float(single)


def _decimal(kind: LogicalType, value: Any) -> str:
    try:
        d = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return str(value)
    if not d.is_finite():
        return "NaN" if d.is_nan() else ("Infinity" if d > 0 else "-Infinity")
    d = d.quantize(Decimal(1).scaleb(-(kind.scale or 0))) if kind.precision is not None else d.normalize()
    if d == 0:
        d = abs(d)
    return format(d, "f")


def _date(kind: LogicalType, value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)[:10]


def _time(kind: LogicalType, value: Any) -> str:
    if isinstance(value, dt.timedelta):  # pymysql's TIME
        micros = value // dt.timedelta(microseconds=1)
        seconds, us = divmod(micros, 1_000_000)
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{us:06d}"
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S.%f")
    text = str(value)
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction[:6].ljust(6, '0')}"


def _timestamp(kind: LogicalType, value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    elif isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("T", " "))
        except ValueError:
            return value  # infinity and other spellings are compared as stored
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return f"{value.year:04d}-{value:%m-%d %H:%M:%S.%f}"
    return str(value)


def _binary(kind: LogicalType, value: Any) -> str:
    if isinstance(value, str):
        return value.encode("utf-8").hex()
    return bytes(value).hex()


def _uuid(kind: LogicalType, value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview) and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    return str(value).strip().lower()


def _json(kind: LogicalType, value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_BY_KIND = {
    "int16": _integer, "int32": _integer, "int64": _integer, "float32": _float, "float64": _float,
    "decimal": _decimal, "string": _string, "bool": _bool, "date": _date, "time": _time,
    "timestamp": _timestamp, "timestamptz": _timestamp, "binary": _binary, "uuid": _uuid, "json": _json,
}
