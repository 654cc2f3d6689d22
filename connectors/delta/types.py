"""Copyjob's logical types as Delta Lake column types, and back (docs/types-delta.md).

A Delta table's schema holds Delta's own types; each field also carries its logical type in the field metadata
``copyjob.type`` (delta-rs keeps Arrow field metadata in the table schema), so that uuid, json, time and wide
decimals reflect back as they were created. Batches travel in their logical Arrow types
(``TableSchema.arrow_schema``) and are cast to the storage types here just before delta-rs writes them.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from copyjob.core.errors import DataError
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema, arrow_type, parse_logical

TYPE_TAG = "copyjob.type"
PRIMARY_KEY_PROPERTY = "copyjob.primaryKey"
"""Table property holding the primary key (a JSON list): Delta has no key constraint of its own."""


def storage_type(t: LogicalType) -> pa.DataType:
    """The Arrow type delta-rs stores a logical type as (Delta: byte … long, float, double, decimal(p≤38,s),
    string, binary, boolean, date, timestamp (UTC), timestamp_ntz)."""
    if t.kind == "time":
        return pa.int64()  # Delta has no time type: microseconds since midnight
    if t.kind == "decimal" and (t.precision is None or t.precision > 38):
        return pa.string()  # beyond Delta's decimal(38): the exact digits as text
    return arrow_type(t)


def storage_field(c: Column) -> pa.Field:
    return pa.field(c.name, storage_type(c.type), nullable=c.nullable, metadata={TYPE_TAG: str(c.type)})


def storage_schema(schema: TableSchema) -> pa.Schema:
    return pa.schema([storage_field(c) for c in schema.columns])


def to_storage(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` (logical Arrow types, the columns of ``schema`` in any order) cast to ``schema``'s storage
    types and order."""
    arrays = []
    for f in schema:
        column = table[f.name]
        if pa.types.is_time(column.type):
            column = column.cast(pa.time64("us")).cast(pa.int64())
        arrays.append(column if column.type == f.type else column.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


_MAX_DAYS = 95_000_000
"""About ±260,000 years: delta-rs computes file statistics with chrono, whose dates end there (PostgreSQL's
``infinity``, carried as the int32/int64 maximum, is far beyond)."""


def check_storable(batch: pa.RecordBatch, table: object) -> None:
    """Refuse dates and timestamps delta-rs cannot keep statistics for (it would abort the process), naming the
    table, the column and the row."""
    for i, f in enumerate(batch.schema):
        if pa.types.is_date32(f.type):
            limit, values = _MAX_DAYS, batch.column(i).cast(pa.int32()).cast(pa.int64())
        elif pa.types.is_timestamp(f.type):
            limit, values = _MAX_DAYS * 86_400_000_000, batch.column(i).cast(pa.int64())
        else:
            continue
        beyond = pc.greater(pc.abs(values), limit)
        if pc.any(beyond).as_py():
            row = beyond.to_pylist().index(True)
            raise DataError(f"Delta table {table}: column {f.name!r} row {row + 1} of the batch holds a date or "
                            "timestamp beyond ±260,000 years (PostgreSQL's infinity?), which Delta Lake cannot "
                            "store", table=table)


def from_storage(table: pa.Table, schema: TableSchema) -> pa.Table:
    """Rows read from a Delta table back in their logical Arrow types (``schema.columns`` only)."""
    arrays = []
    for c in schema.columns:
        column = table[c.name]
        want = arrow_type(c.type)
        if c.type.kind == "time" and pa.types.is_integer(column.type):
            column = column.cast(pa.int64()).cast(pa.time64("us"))
        arrays.append(column if column.type == want else column.cast(want))
    return pa.Table.from_arrays(arrays, schema=schema.arrow_schema())


# ---------------------------------------------------------------- reflecting

_DELTA_KINDS: dict[str, str] = {
    "byte": "int16", "short": "int16", "integer": "int32", "long": "int64", "float": "float32",
    "double": "float64", "string": "string", "binary": "binary", "boolean": "bool", "date": "date",
    "timestamp": "timestamptz", "timestamp_ntz": "timestamp",
}


def logical_of(delta_type: Any, tag: str | None) -> LogicalType:
    """The logical type of a Delta field: its ``copyjob.type`` tag, else from the Delta type (tables written by
    other tools; nested types become string)."""
    if tag:
        return parse_logical(tag)
    if isinstance(delta_type, str):
        if delta_type.startswith("decimal(") and delta_type.endswith(")"):
            p, _, s = delta_type[len("decimal("):-1].partition(",")
            return LogicalType("decimal", precision=int(p), scale=int(s or 0))
        return parse_logical(_DELTA_KINDS.get(delta_type, "string"))
    return LogicalType("string")


def schema_from_delta(table: TableName, schema_json: str, configuration: dict[str, str]) -> TableSchema:
    """A :class:`TableSchema` from a Delta table's schema string and its table properties."""
    doc = json.loads(schema_json)
    columns = tuple(
        Column(name=f["name"], type=logical_of(f["type"], (f.get("metadata") or {}).get(TYPE_TAG)),
               nullable=bool(f.get("nullable", True)),
               native_type=f["type"] if isinstance(f["type"], str) else "struct")
        for f in doc.get("fields", ()))
    key = json.loads(configuration.get(PRIMARY_KEY_PROPERTY) or "[]")
    names = {c.name for c in columns}
    return TableSchema(table, columns, tuple(k for k in key if k in names))
