"""Reading rows through ``COPY … TO STDOUT (FORMAT csv)`` parsed by Arrow's multi-threaded CSV reader.

Decoding binary COPY in Python builds a Python object per value; Arrow's CSV parser turns the text straight
into columns in C++, several times faster. The session runs in UTC with ISO dates (see ``_connect``), so
every value's text is one Arrow parses exactly: timestamps with ``+00`` offsets, ``t``/``f`` booleans,
decimals, ``Infinity``/``NaN``. NULL is an unquoted empty field; an empty string is a quoted one. bytea goes
as hex and is decoded here; dates, times and timestamps are read as text and converted here, so that the ones
Arrow's parser refuses (infinity, BC, 24:00) are kept exactly (see ``core.temporal``).
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from copyjob.connectors._sql import quote_double
from copyjob.connectors.postgres._catalog import read_cast

from copyjob.core import temporal
from copyjob.core.schema import Column, TableSchema

BLOCK_BYTES = 8 << 20


def select_expressions(schema: TableSchema) -> list[str]:
    """One SQL expression per column, whose text output Arrow parses into the column's Arrow type."""
    return [_expression(c) for c in schema.columns]


def _expression(column: Column) -> str:
    name = quote_double(column.name)
    if column.type.kind == "binary":
        return f"encode({name}, 'hex')"
    if column.type.kind == "string":  # CSV has every value's output text already (inet's ::text differs)
        return name
    cast, _copy_type = read_cast(column)
    return f"{name}::{cast}" if cast else name


def _as_text(field: pa.Field) -> bool:
    """Columns the CSV reader hands out as text: bytea (hex), numerics wider than 38 digits, and dates, times and
    timestamps, whose text may be one Arrow's parser refuses (``infinity``, ``0044-03-15 BC``, ``24:00:00``; see
    ``core.temporal``)."""
    t = field.type
    return (pa.types.is_binary(t) or pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_timestamp(t)
            or pa.types.is_decimal256(t))  # Arrow's CSV reader converts to decimal128 only


def _wire_schema(schema: pa.Schema) -> pa.Schema:
    """What the CSV reader produces: the columns of :func:`_as_text` as strings."""
    return pa.schema([pa.field(f.name, pa.string()) if _as_text(f) else f for f in schema])


class _CopyStream(io.RawIOBase):
    """A file object over the COPY data messages, for Arrow's reader."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(bytes(chunk))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def parse(chunks: Iterator[Any], schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Arrow record batches of ``schema`` (at most ``batch_rows`` rows each) from CSV COPY data."""
    first = next(chunks, None)
    if first is None:  # no rows: Arrow refuses an empty CSV
        return
    wire = _wire_schema(schema)
    text = [i for i, f in enumerate(schema) if _as_text(f)]
    try:
        reader = pacsv.open_csv(
            io.BufferedReader(_CopyStream(itertools.chain([first], chunks)), buffer_size=1 << 20),
            read_options=pacsv.ReadOptions(column_names=wire.names, block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=wire, true_values=["t"], false_values=["f"], null_values=[""],
                strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
        for batch in reader:
            batch = _decode_text(batch, text, schema) if text else pa.RecordBatch.from_arrays(batch.columns,
                                                                                              schema=schema)
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows)
    except pa.ArrowInvalid as exc:
        raise _named(exc, schema) from exc


def _named(exc: pa.ArrowInvalid, schema: pa.Schema) -> pa.ArrowInvalid:
    """Arrow's conversion error with the column's name (Arrow numbers the column): e.g. a numeric(p,s) NaN,
    which no Arrow decimal holds."""
    found = re.match(r"In CSV column #(\d+): (.*)", str(exc), re.S)
    if found is None or int(found[1]) >= len(schema):
        return exc
    field = schema.field(int(found[1]))
    return pa.ArrowInvalid(f"column {field.name!r} ({field.type}): {found[2]}")


def _decode_text(batch: pa.RecordBatch, text: list[int], schema: pa.Schema) -> pa.RecordBatch:
    columns = list(batch.columns)
    for i in text:
        target = schema.field(i).type
        if pa.types.is_binary(target):
            columns[i] = pa.array([None if v is None else bytes.fromhex(v) for v in columns[i].to_pylist()],
                                  type=target)
        elif pa.types.is_decimal256(target):
            columns[i] = columns[i].cast(target)
        else:
            columns[i] = _temporal(columns[i], target)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _temporal(values: pa.Array, target: pa.DataType) -> pa.Array:
    """PostgreSQL's text of dates, times or timestamps as ``target``: Arrow's parser first, and when a value
    is one it refuses (infinity, BC, 24:00), every value of the column through ``core.temporal``."""
    try:
        if pa.types.is_time(target):  # Arrow casts no string to a time: read it as a time of 1970-01-01
            day = pc.binary_join_element_wise("1970-01-01 ", values, "")
            return day.cast(pa.timestamp("us")).view(pa.int64()).cast(target)
        return values.cast(target)
    except pa.ArrowInvalid:
        parse = (temporal.parse_date if pa.types.is_date(target) else
                 temporal.parse_time if pa.types.is_time(target) else temporal.parse_timestamp)
        ints = pa.array([None if v is None else parse(v) for v in values.to_pylist()], pa.int64())
        return ints.cast(pa.int32()).view(target) if pa.types.is_date(target) else ints.view(target)
