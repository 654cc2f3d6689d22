"""The canonical text of a value, as ``copyjob verify`` hashes it, computed in Python.

Every system spells a row's values as this text, so that values equal after the documented type conversions
hash equally. The SQL dialects (``connectors/_digest_sql.py``) produce the same text inside the database
for the kinds they can; for the others (floats, JSON, unconstrained decimals; every kind in SQLite, where
these functions run inside the database as user functions) this module is the definition:

- integers: decimal digits; strings: as stored; bool: ``t`` / ``f``;
- decimal(p,s): exactly ``s`` decimals (``1.50``); unconstrained decimal: no trailing zeros (``1.5``);
- float64: Python's shortest round-trip ``repr`` (``0.1``, ``100.0``, ``1e+16``); float32: the shortest
  text that round-trips as a float32, then as float64; ``NaN``, ``Infinity``, ``-Infinity``; -0.0 is 0.0;
- date ``YYYY-MM-DD``; time ``HH:MM:SS[.f]``; timestamp and timestamptz ``YYYY-MM-DD HH:MM:SS[.f]``, the
  fraction of a second without trailing zeros and left out when zero, as PostgreSQL and DuckDB print them
  (timestamptz in UTC, so a DATETIME holding UTC equals it);
- binary: lowercase hex; uuid: lowercase text; JSON: sorted keys, no spaces (``{"a":1,"b":[2]}``).

A row's text joins its columns' texts with U+001F; a NULL is U+001E. Its hash is the first 8 bytes of the
MD5 of the UTF-8 text, as an unsigned integer; a range's digest is their sum modulo 2**64 (order-free, so
no ORDER BY is needed). A bucket of an integer key (``RowDigests.bucket_digests``) is hashed whole instead:
the first 8 bytes of the MD5 of its rows' texts in key order joined by U+001D (:func:`ordered_hash`), one
MD5 per bucket rather than one per row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import struct
import uuid
from collections.abc import Iterable, Sequence
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from copyjob.core.schema import LogicalType, parse_logical

SEPARATOR = "\x1f"
NULL_MARK = "\x1e"
ROW_SEPARATOR = "\x1d"
MODULUS = 2**64

TRUE_TEXTS = frozenset({"1", "t", "true", "y", "yes", "on"})


def row_text(texts: Sequence[str | None]) -> str:
    return SEPARATOR.join(NULL_MARK if t is None else t for t in texts)


def text_hash(text: str) -> int:
    """The first 8 bytes of the MD5 of ``text`` (UTF-8), big-endian unsigned."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big")


def ordered_hash(texts: Iterable[str]) -> int:
    """The hash of rows whose texts come in key order: :func:`text_hash` of the texts joined by U+001D (fed to
    MD5 piece by piece: a bucket's text is never held whole)."""
    md5 = hashlib.md5()
    for i, text in enumerate(texts):
        md5.update(((ROW_SEPARATOR if i else "") + text).encode("utf-8"))
    return int.from_bytes(md5.digest()[:8], "big")


def hex_hash(md5_hex: str) -> int:
    """The hash from an MD5 spelled in hex (as the SQL systems return it): its first 8 bytes."""
    return int(md5_hex[:16], 16)


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
    scale = kind.scale or 0
    # the default context keeps 28 digits: numeric(50,10) and wider would fail to quantize or be rounded
    exact = Context(prec=max(28, len(d.as_tuple().digits), d.adjusted() + 2 + scale))
    d = d.quantize(Decimal(1).scaleb(-scale), context=exact) if kind.precision is not None else d.normalize(exact)
    if d == 0:
        d = abs(d)
    return format(d, "f")


def _date(kind: LogicalType, value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)[:10]


def _fraction(us: int) -> str:
    """Microseconds as PostgreSQL prints them after the seconds: ``.25``; nothing when zero."""
    return f".{us:06d}".rstrip("0") if us else ""


def _time(kind: LogicalType, value: Any) -> str:
    if isinstance(value, dt.timedelta):  # pymysql's TIME
        micros = value // dt.timedelta(microseconds=1)
        seconds, us = divmod(micros, 1_000_000)
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}{_fraction(us)}"
    if isinstance(value, dt.time):
        return f"{value:%H:%M:%S}{_fraction(value.microsecond)}"
    text = str(value)
    whole, _, fraction = text.partition(".")
    return whole + _fraction(int(fraction[:6].ljust(6, "0"))) if fraction.isdigit() else whole


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
        return f"{value.year:04d}-{value:%m-%d %H:%M:%S}{_fraction(value.microsecond)}"
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
