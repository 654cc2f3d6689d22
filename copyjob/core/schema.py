"""Table schemas in copyjob's own vocabulary: logical column types that every connector maps to and from.

A connector reflects a source table into a :class:`TableSchema` (logical types, nullability, primary key) and
renders a :class:`TableSchema` into its own DDL. Data between them travels as Arrow record batches whose
schema is :meth:`TableSchema.arrow_schema`. The logical type is kept in each Arrow field's metadata
(``copyjob.type``) so that uuid and json survive a trip through Arrow strings. Dates, times and timestamps
that Python cannot hold (infinity, BC, 24:00) travel as Arrow values too: see :mod:`copyjob.core.temporal`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pyarrow as pa

Kind = Literal[
    "int16", "int32", "int64", "float32", "float64", "decimal", "string", "bool",
    "date", "time", "timestamp", "timestamptz", "binary", "uuid", "json",
]
KINDS: tuple[str, ...] = (
    "int16", "int32", "int64", "float32", "float64", "decimal", "string", "bool",
    "date", "time", "timestamp", "timestamptz", "binary", "uuid", "json",
)


@dataclass(frozen=True)
class LogicalType:
    """A column type every connector understands.

    ``decimal`` carries precision and scale (precision None: unconstrained numeric, carried as text);
    ``string`` may carry a maximum length; timestamps and times are to the microsecond.
    """

    kind: Kind
    precision: int | None = None
    scale: int | None = None
    length: int | None = None

    def __str__(self) -> str:
        if self.kind == "decimal" and self.precision is not None:
            return f"decimal({self.precision},{self.scale or 0})"
        if self.kind == "string" and self.length:
            return f"string({self.length})"
        return self.kind


@dataclass(frozen=True)
class TableName:
    """A table, optionally inside a schema (PostgreSQL schema, MySQL database)."""

    name: str
    schema: str | None = None

    @classmethod
    def parse(cls, text: str) -> TableName:
        if "." in text:
            schema, _, name = text.partition(".")
            return cls(name=name, schema=schema)
        return cls(name=text)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class Column:
    name: str
    type: LogicalType
    nullable: bool = True
    native_type: str = ""
    """The type as the source system spells it (``numeric(12,2)``); used to decide binary pass-through."""
    generated: str | None = None
    """A PostgreSQL stored generated column's expression (``GENERATED ALWAYS AS (expr) STORED``, as pg_get_expr
    prints it): a PostgreSQL destination creates the column generated and computes it; nothing writes it."""


@dataclass(frozen=True)
class TableSchema:
    table: TableName
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    def select(self, names: list[str]) -> TableSchema:
        wanted = [c for c in self.columns if c.name in set(names)]
        return replace(self, columns=tuple(wanted), primary_key=tuple(k for k in self.primary_key if k in names))

    def with_catalog(self, catalog: TableSchema) -> TableSchema:
        """This schema (a change stream's) with what only the catalog knows: PostgreSQL's relation messages carry
        neither NOT NULL nor the declared type. Each column takes the catalog's nullability and native type where
        name and kind agree."""
        known = {c.name: c for c in catalog.columns}
        columns = tuple(replace(c, nullable=k.nullable, native_type=c.native_type or k.native_type)
                        if (k := known.get(c.name)) is not None and k.type.kind == c.type.kind else c
                        for c in self.columns)
        return replace(self, columns=columns)

    def renamed(self, table: TableName, columns: Mapping[str, str]) -> TableSchema:
        """The schema as the destination sees it: new table name, columns renamed by ``columns``."""
        return TableSchema(
            table=table,
            columns=tuple(replace(c, name=columns.get(c.name, c.name)) for c in self.columns),
            primary_key=tuple(columns.get(k, k) for k in self.primary_key),
        )

    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema([arrow_field(c) for c in self.columns])


def arrow_type(t: LogicalType) -> pa.DataType:
    """The Arrow type that carries values of a logical type."""
    import pyarrow as pa

    k = t.kind
    if k == "decimal":
        if t.precision is None:
            return pa.string()
        p, s = t.precision, t.scale or 0
        return pa.decimal128(p, s) if p <= 38 else pa.decimal256(p, s)
    simple: dict[str, pa.DataType] = {
        "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
        "float32": pa.float32(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_(),
        "date": pa.date32(), "time": pa.time64("us"), "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"), "binary": pa.binary(), "uuid": pa.string(),
        "json": pa.string(),
    }
    return simple[k]


def arrow_field(c: Column) -> pa.Field:
    import pyarrow as pa

    meta = {b"copyjob.type": str(c.type).encode()}
    return pa.field(c.name, arrow_type(c.type), nullable=c.nullable, metadata=meta)


def logical_from_arrow(dt: pa.DataType, meta: dict[bytes, bytes] | None = None) -> LogicalType:
    """Best logical type for an Arrow type (used for file sources and Arrow-native systems)."""
    import pyarrow as pa
    import pyarrow.types as pt

    tagged = (meta or {}).get(b"copyjob.type")
    if tagged:
        return parse_logical(tagged.decode())
    if pt.is_int8(dt) or pt.is_int16(dt) or pt.is_uint8(dt):
        return LogicalType("int16")
    if pt.is_int32(dt) or pt.is_uint16(dt):
        return LogicalType("int32")
    if pt.is_integer(dt):
        return LogicalType("int64")
    if pt.is_float16(dt) or pt.is_float32(dt):
        return LogicalType("float32")
    if pt.is_floating(dt):
        return LogicalType("float64")
    if pt.is_decimal(dt):
        return LogicalType("decimal", precision=dt.precision, scale=dt.scale)
    if pt.is_boolean(dt):
        return LogicalType("bool")
    if pt.is_date(dt):
        return LogicalType("date")
    if pt.is_time(dt):
        return LogicalType("time")
    if pt.is_timestamp(dt):
        return LogicalType("timestamptz" if dt.tz else "timestamp")
    if pt.is_binary(dt) or pt.is_large_binary(dt) or pt.is_fixed_size_binary(dt):
        return LogicalType("binary")
    if isinstance(dt, pa.ExtensionType) and dt.extension_name == "arrow.uuid":
        return LogicalType("uuid")
    return LogicalType("string")


def parse_logical(text: str) -> LogicalType:
    """Inverse of ``str(LogicalType)``."""
    if text.startswith("decimal(") and text.endswith(")"):
        p, _, s = text[len("decimal("):-1].partition(",")
        return LogicalType("decimal", precision=int(p), scale=int(s or 0))
    if text.startswith("string(") and text.endswith(")"):
        return LogicalType("string", length=int(text[len("string("):-1]))
    if text not in KINDS:
        return LogicalType("string")
    return LogicalType(text)  # type: ignore[arg-type]
