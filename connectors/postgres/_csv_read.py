"""Reading rows through ``COPY … TO STDOUT (FORMAT csv)`` parsed by Arrow's multi-threaded CSV reader.

Decoding binary COPY in Python builds a Python object per value; Arrow's CSV parser turns the text straight
into columns in C++, several times faster. The session runs in UTC with ISO dates (see ``_connect``), so
every value's text is one Arrow parses exactly: timestamps with ``+00`` offsets, ``t``/``f`` booleans,
decimals, ``Infinity``/``NaN``. NULL is an unquoted empty field; an empty string is a quoted one. bytea goes
as hex and is decoded here.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from copyjob.connectors._sql import quote_double
from copyjob.connectors.postgres._catalog import read_cast

from copyjob.core.schema import Column, TableSchema

BLOCK_BYTES = 8 << 20


def select_expressions(schema: TableSchema) -> list[str]:
    """One SQL expression per column, whose text output Arrow parses into the column's Arrow type."""
    return [_expression(c) for c in schema.columns]


def _expression(column: Column) -> str:
    name = quote_double(column.name)
    if column.type.kind == "binary":
        return f"encode({name}, 'hex')"
    cast, _copy_type = read_cast(column)
    return f"{name}::{cast}" if cast else name


def _wire_schema(schema: pa.Schema) -> pa.Schema:
    """What the CSV reader produces: bytea arrives as hex text."""
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_binary(f.type) else f for f in schema])


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
    reader = pacsv.open_csv(
        io.BufferedReader(_CopyStream(itertools.chain([first], chunks)), buffer_size=1 << 20),
        read_options=pacsv.ReadOptions(column_names=wire.names, block_size=BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=wire, true_values=["t"], false_values=["f"], null_values=[""],
            strings_can_be_null=True, quoted_strings_can_be_null=False),
    )
    binary = [i for i, f in enumerate(schema) if pa.types.is_binary(f.type)]
    for batch in reader:
        if binary:
            batch = _decode_hex(batch, binary, schema)
        else:
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


def _decode_hex(batch: pa.RecordBatch, binary: list[int], schema: pa.Schema) -> pa.RecordBatch:
    columns = list(batch.columns)
    for i in binary:
        columns[i] = pa.array([None if v is None else bytes.fromhex(v) for v in columns[i].to_pylist()],
                              type=schema.field(i).type)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
