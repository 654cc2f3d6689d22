"""copyjob's logical types as Iceberg types, and back (the table of docs/types-iceberg.md).

Iceberg has fewer types than copyjob: int16 is stored as ``int``, json as ``string``, and a decimal wider than
38 digits (or without a precision) as ``string``. So that ``reflect`` gives back the logical type a table was
created with, each field's ``doc`` carries it (``copyjob:int16``); fields of tables written by other tools
are read from their Iceberg type alone. Values travel between the two as Arrow: :func:`to_table_arrow` casts a
load's batch to the table's Arrow schema, :func:`to_logical_arrow` casts what a scan returns back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.schema import Schema
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from copyjob.core.errors import DataError
from copyjob.core.schema import Column, LogicalType, TableName, arrow_type, parse_logical

DOC_PREFIX = "copyjob:"
MAX_DECIMAL_PRECISION = 38

_SIMPLE: dict[str, IcebergType] = {
    "int16": IntegerType(), "int32": IntegerType(), "int64": LongType(), "float32": FloatType(),
    "float64": DoubleType(), "string": StringType(), "bool": BooleanType(), "date": DateType(), "time": TimeType(),
    "timestamp": TimestampType(), "timestamptz": TimestamptzType(), "binary": BinaryType(), "uuid": UUIDType(),
    "json": StringType(),
}


def iceberg_type(t: LogicalType) -> IcebergType:
    """The Iceberg type that stores values of a logical type."""
    if t.kind == "decimal":
        if t.precision is None or t.precision > MAX_DECIMAL_PRECISION:
            return StringType()  # exact digits kept as text: Iceberg decimals stop at 38
        return DecimalType(t.precision, t.scale or 0)
    return _SIMPLE[t.kind]


def logical_from_iceberg(t: IcebergType) -> LogicalType:
    """The logical type of an Iceberg field without a copyjob doc (a table written by another tool)."""
    if isinstance(t, DecimalType):
        return LogicalType("decimal", precision=t.precision, scale=t.scale)
    for kind, known in _SIMPLE.items():
        if kind not in ("int16", "json") and t == known:
            return LogicalType(kind)  # type: ignore[arg-type]
    return LogicalType("string")


def field_for(field_id: int, column: Column, *, required: bool | None = None) -> NestedField:
    return NestedField(field_id, column.name, iceberg_type(column.type),
                       required=(not column.nullable) if required is None else required,
                       doc=f"{DOC_PREFIX}{column.type}")


def iceberg_schema(columns: Sequence[Column]) -> Schema:
    return Schema(*(field_for(i, c) for i, c in enumerate(columns, start=1)))


def columns_of(schema: Schema) -> tuple[Column, ...]:
    """The table's columns in copyjob's vocabulary (the doc's logical type when the field carries one)."""
    columns = []
    for f in schema.fields:
        doc = f.doc or ""
        logical = parse_logical(doc[len(DOC_PREFIX):]) if doc.startswith(DOC_PREFIX) else \
            logical_from_iceberg(f.field_type)
        columns.append(Column(f.name, logical, nullable=not f.required, native_type=str(f.field_type)))
    return tuple(columns)


# ---------------------------------------------------------------- values


def _is_uuid(t: pa.DataType) -> bool:
    return getattr(t, "extension_name", None) == "arrow.uuid"


def _uuid_to_bytes(values: pa.Array, table: TableName, name: str) -> pa.Array:
    out = []
    for v in values.to_pylist():
        try:
            out.append(None if v is None else uuid.UUID(str(v)).bytes)
        except ValueError as exc:
            raise DataError(f"Iceberg table {table}: column {name!r}: {v!r} is not a UUID") from exc
    return pa.array(out, pa.binary(16))


def _uuid_to_text(values: pa.Array) -> pa.Array:
    storage = getattr(values, "storage", values)
    return pa.array([None if v is None else str(uuid.UUID(bytes=v)) for v in storage.to_pylist()], pa.string())


def to_table_arrow(data: pa.Table, target: pa.Schema, table: TableName) -> pa.Table:
    """``data`` (columns with logical Arrow types) in the table's Arrow schema: its field order and types, NULL
    columns for the fields ``data`` lacks. A NULL in a required field or a value that does not fit raises
    DataError naming the table."""
    arrays = []
    for f in target:
        if f.name not in data.column_names:
            if not f.nullable and data.num_rows:
                raise DataError(f"Iceberg table {table}: the rows have no value for the NOT NULL column {f.name!r}")
            arrays.append(pa.nulls(data.num_rows, f.type))
            continue
        column = data[f.name].combine_chunks()
        if not f.nullable and column.null_count:
            row = column.is_null().to_pylist().index(True) + 1
            raise DataError(f"Iceberg table {table}: column {f.name!r} is NOT NULL but row {row} of the batch holds "
                            "NULL")
        try:
            if _is_uuid(f.type):
                storage = _uuid_to_bytes(column, table, f.name)
                arrays.append(pa.ExtensionArray.from_storage(f.type, storage.cast(f.type.storage_type)))
            elif pa.types.is_fixed_size_binary(f.type) and pa.types.is_string(column.type):
                arrays.append(_uuid_to_bytes(column, table, f.name).cast(f.type))
            elif column.type != f.type:
                arrays.append(column.cast(f.type))
            else:
                arrays.append(column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"Iceberg table {table}: column {f.name!r}: {exc}") from exc
    return pa.Table.from_arrays(arrays, schema=target)


def to_logical_arrow(data: pa.Table, columns: Sequence[Column]) -> pa.Table:
    """What a scan returned, as the Arrow types of ``columns`` (uuid bytes back to text, large strings back to
    strings, int back to int16, …); columns the scan lacks are NULL."""
    arrays, fields = [], []
    for c in columns:
        want = arrow_type(c.type)
        if c.name not in data.column_names:
            arrays.append(pa.nulls(data.num_rows, want))
        else:
            column = data[c.name].combine_chunks()
            if (_is_uuid(column.type)) or (pa.types.is_fixed_size_binary(column.type) and c.type.kind == "uuid"):
                column = _uuid_to_text(column)
            arrays.append(column if column.type == want else pc.cast(column, want))
        fields.append(pa.field(c.name, want, nullable=True))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# ---------------------------------------------------------------- statistics

_PYTHON_RANGE = {"date32[day]": (-719_162, 2_932_896), "time64[us]": (0, 86_399_999_999)}
"""Values Python's datetime holds (0001-01-01 … 9999-12-31, times before 24:00), in Arrow's integers."""
_TIMESTAMP_RANGE = (-62_135_596_800_000_000, 253_402_300_799_999_999)
METRICS_PROPERTY = "write.metadata.metrics.column."


def beyond_python(data: pa.Table) -> list[str]:
    """Date, time and timestamp columns holding values Python cannot hold (BC, infinity, 24:00): pyiceberg
    reads the min/max statistics of each new data file as Python values, so such columns keep counts only."""
    found = []
    for f in data.schema:
        if pa.types.is_timestamp(f.type):
            low, high = _TIMESTAMP_RANGE
            as_int = pa.int64()
        elif str(f.type) in _PYTHON_RANGE:
            low, high = _PYTHON_RANGE[str(f.type)]
            as_int = pa.int32() if pa.types.is_date32(f.type) else pa.int64()
        else:
            continue
        column = data[f.name]
        if column.null_count == len(column):
            continue
        bounds = pc.min_max(column.cast(as_int))
        if bounds["min"].as_py() < low or bounds["max"].as_py() > high:
            found.append(f.name)
    return found
