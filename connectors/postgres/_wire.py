"""Arrow columns → what binary COPY writes for a destination column: the plan per column, and the Python
values psycopg's binary COPY dumpers take (the row-by-row path; _binary_rows.py encodes whole batches).

The plan is made once per (destination column, Arrow type). Dates, times and timestamps skip Python datetime
objects altogether: PostgreSQL's binary format for them is a plain integer (days or microseconds since
2000-01-01, microseconds since midnight), so the column is shifted with Arrow compute and written with the
int4/int8 dumper: creating a million tz-aware datetimes costs more than the whole COPY.
"""

from __future__ import annotations

import decimal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pt
from copyjob.connectors.postgres._catalog import NativeColumn

from copyjob.core import temporal

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in microseconds since 1970
PG_EPOCH_DAYS = 10_957  # 2000-01-01 in days since 1970
INT_LIMITS = {"int2": (-(2**15), 2**15 - 1), "int4": (-(2**31), 2**31 - 1), "int8": (-(2**63), 2**63 - 1)}
TEXT_TYPES = {"text", "varchar", "bpchar", "name"}  # one binary format: the UTF-8 bytes

Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class Wire:
    """How one Arrow column goes onto the wire."""

    copy_type: str
    """The type psycopg dumps the values as (its binary format equals the destination column's)."""
    prepare: Callable[[pa.Array], pa.Array] | None = None
    """Vectorised rewrite of the Arrow column before ``to_pylist``."""
    convert: Converter | None = None
    """Per-value conversion of the non-NULL Python values."""


@dataclass(frozen=True)
class Planned:
    """One Arrow column of a batch on its way into a destination column, with its plan."""

    column: NativeColumn
    array: pa.Array
    wire: Wire


RowError = Callable[[int, str], Exception]
"""Builds the error that names the batch's row (0-based index) and what is wrong with it."""


def plan(column: NativeColumn, arrow: pa.DataType) -> Wire:
    target = column.base_type
    if target in ("timestamp", "timestamptz") and pt.is_timestamp(arrow):
        # timestamptz stores UTC and naive Arrow timestamps are taken as UTC: both become UTC microseconds
        return Wire("int8", _timestamp_micros)
    if target == "date" and pt.is_date(arrow):
        return Wire("int4", _date_days)
    if target == "time" and pt.is_time(arrow):
        return Wire("int8", _time_micros)
    if target in TEXT_TYPES:
        text = pt.is_string(arrow) or pt.is_large_string(arrow)
        return Wire("text", convert=None if text else str)
    if target == "numeric" and not pt.is_decimal(arrow):
        return Wire("numeric", convert=_to_decimal)
    if target == "uuid":
        return Wire("uuid", convert=_to_uuid)
    return Wire(target)


def _timestamp_micros(array: pa.Array) -> pa.Array:
    us = array.cast(pa.timestamp("us", tz=array.type.tz), safe=False)  # ns → µs as PostgreSQL would round
    return _shifted(us.view(pa.int64()), PG_EPOCH_US, temporal.TIMESTAMP_INFINITY, 2**63)


def _date_days(array: pa.Array) -> pa.Array:
    days = array.cast(pa.date32()).view(pa.int32())
    return _shifted(days, PG_EPOCH_DAYS, temporal.DATE_INFINITY, 2**31)


def _shifted(values: pa.Array, epoch: int, infinity: int, limit: int) -> pa.Array:
    """Values counted from 1970 counted from PostgreSQL's 2000 instead; copyjob's ±infinity (see
    ``core.temporal``) become PostgreSQL's (the integer type's maximum and minimum)."""
    shifted = pc.subtract(values, epoch)  # cannot overflow: only the infinities are that close to the limits
    if values.null_count != len(values) and pc.max(pc.abs(values)).as_py() >= infinity:
        shifted = pc.if_else(pc.equal(values, infinity), pa.scalar(limit - 1, values.type), shifted)
        shifted = pc.if_else(pc.equal(values, -infinity), pa.scalar(-limit, values.type), shifted)
    return shifted


def _time_micros(array: pa.Array) -> pa.Array:
    return array.cast(pa.time64("us"), safe=False).view(pa.int64())


def _to_decimal(v: Any) -> decimal.Decimal:
    return decimal.Decimal(str(v))


def _to_uuid(v: Any) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    return uuid.UUID(bytes=v) if isinstance(v, bytes) else uuid.UUID(str(v))


def python_values(planned: Planned, row_error: RowError) -> list[Any]:
    """The column's values as psycopg's dumpers want them (column-wise: one to_pylist per column)."""
    column, array, wire = planned.column, planned.array, planned.wire
    bad = first_out_of_range(column, array)
    if bad is not None:
        raise row_error(bad, f"value {array[bad].as_py()} of column {column.name!r} is out of range "
                             f"for {column.native_type}")
    values: list[Any] = (wire.prepare(array) if wire.prepare else array).to_pylist()
    convert = wire.convert
    if convert is None:
        return values
    try:
        return [None if v is None else convert(v) for v in values]
    except (ValueError, TypeError, ArithmeticError) as exc:
        bad = first_unconvertible(convert, values)
        raise row_error(bad, f"value {values[bad]!r} of column {column.name!r} does not fit "
                             f"{column.native_type}") from exc


def first_out_of_range(column: NativeColumn, array: pa.Array) -> int | None:
    """Index of the first integer that does not fit the int2/int4/int8 column (psycopg's binary dumpers
    would silently wrap it), or None."""
    limits = INT_LIMITS.get(column.base_type)
    if limits is None or not pt.is_integer(array.type) or array.null_count == len(array):
        return None
    lo, hi = limits
    if _type_fits(array.type, lo, hi):
        return None
    bounds = pc.min_max(array)
    if bounds["min"].as_py() >= lo and bounds["max"].as_py() <= hi:
        return None
    index: int = pc.index(pc.or_(pc.less(array, lo), pc.greater(array, hi)), True).as_py()
    return index


def _type_fits(arrow: pa.DataType, lo: int, hi: int) -> bool:
    bits = arrow.bit_width
    if pt.is_signed_integer(arrow):
        return -(2 ** (bits - 1)) >= lo and 2 ** (bits - 1) - 1 <= hi
    return 2**bits - 1 <= hi


def first_unconvertible(convert: Converter, values: list[Any]) -> int:
    """Index of the first value ``convert`` refuses (to name the row in the error)."""
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            convert(v)
        except (ValueError, TypeError, ArithmeticError):
            return i
    return 0


def as_is(value: Any) -> Any:
    return value
