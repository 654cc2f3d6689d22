"""Binlog row values → the values a snapshot read of the same row gives.

The binlog reader (pymysqlreplication) decodes some types differently from the text protocol a snapshot
reads with: SET as a Python set, BIT as a string of 0s and 1s, MySQL's binary JSON as Python objects,
BINARY(n) without its trailing zero bytes, MariaDB's UUID, INET4 and INET6 as bytes. :func:`row_converter`
first brings those to the text protocol's form, then applies the connector's converter for the column's
logical type (passed in, so that this package never imports a connector): decimals stay exact, TIMESTAMP
becomes an aware UTC datetime, TINYINT(1) a bool.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from copyjob.core.errors import DataError
from copyjob.core.schema import Column, TableSchema

Convert = Callable[[Any], Any]
ConverterFor = Callable[[Column], Convert | None]
"""The connector's converter for a column: driver value → logical value (None: keep as is)."""

_QUOTED = re.compile(r"'((?:[^'\\]|\\.|'')*)'")
_BINARY_N = re.compile(r"^binary\((\d+)\)")


def _members(native_type: str) -> list[str]:
    """``set('a','b')`` → ``['a', 'b']``."""
    return [m.replace("''", "'").replace("\\'", "'") for m in _QUOTED.findall(native_type)]


def _set_text(native_type: str) -> Convert:
    order = {m: i for i, m in enumerate(_members(native_type))}

    def convert(value: Any) -> Any:
        if isinstance(value, set | frozenset | list | tuple):
            return ",".join(sorted(value, key=lambda m: order.get(m, len(order))))
        return value

    return convert


def _bits_to_bytes(value: Any) -> Any:
    if isinstance(value, str) and value and set(value) <= {"0", "1"}:
        return int(value, 2).to_bytes((len(value) + 7) // 8, "big")
    return value


def _json_text(value: Any) -> Any:
    if isinstance(value, str | bytes):
        return value
    return json.dumps(value, ensure_ascii=False, default=lambda v: v.decode("utf-8", "replace")
                      if isinstance(v, bytes | bytearray) else str(v))


def _padded(length: int) -> Convert:
    def convert(value: Any) -> Any:
        if isinstance(value, bytes | bytearray) and len(value) < length:
            return bytes(value) + b"\x00" * (length - len(value))
        return value

    return convert


def _uuid_text(value: Any) -> Any:
    if isinstance(value, bytes | bytearray) and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    return value


def _inet_text(value: Any) -> Any:
    if isinstance(value, bytes | bytearray) and len(value) in (4, 16):
        address = ipaddress.ip_address(bytes(value))
        mapped = getattr(address, "ipv4_mapped", None)
        return f"::ffff:{mapped}" if mapped is not None else str(address)
    return value


def _binlog_form(column: Column) -> Convert | None:
    native = column.native_type.lower()
    base = native.split("(")[0].split(" ")[0]
    if base == "uuid":  # MariaDB's UUID type: 16 bytes in the binlog
        return _uuid_text
    if base in ("inet4", "inet6"):
        return _inet_text
    if base == "set":
        return _set_text(column.native_type)
    if base == "bit":
        return _bits_to_bytes
    if column.type.kind == "json":
        return _json_text
    m = _BINARY_N.match(native)
    if m:
        return _padded(int(m.group(1)))
    return None


def column_converter(column: Column, logical: ConverterFor) -> Convert | None:
    """Binlog value → logical value for one column (None when values pass as they are)."""
    first, then = _binlog_form(column), logical(column)
    if first is None:
        return then
    if then is None:
        return first
    return lambda v: then(first(v))


def row_converter(schema: TableSchema, logical: ConverterFor) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A function turning a binlog row image into a row of ``schema``'s columns (others dropped, missing
    ones NULL)."""
    plan = [(c.name, column_converter(c, logical)) for c in schema.columns]

    def convert(image: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, conv in plan:
            value = image.get(name)
            if conv is not None and value is not None:
                try:
                    value = conv(value)
                except (ValueError, TypeError, ArithmeticError) as exc:
                    raise DataError(f"{schema.table}: column {name!r}: a changed value cannot be read: {exc}") \
                        from exc
            out[name] = value
        return out

    return convert
