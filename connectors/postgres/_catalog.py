"""PostgreSQL types ↔ logical types: reflection from the catalog and DDL rendered with SQLAlchemy.

Reflection reads ``pg_attribute`` directly rather than through ``sqlalchemy.inspect``: we need the type exactly
as ``format_type()`` prints it (``numeric(12,2)``) to decide binary pass-through, and the base type of
domains; one catalog query gives both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from copyjob.connectors._sql import qualified, quote_double

from copyjob.core.contracts import IndexInfo
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema

if TYPE_CHECKING:
    from sqlalchemy.types import TypeEngine

DEFAULT_SCHEMA = "public"

_SIMPLE: dict[str, LogicalType] = {
    "int2": LogicalType("int16"), "int4": LogicalType("int32"), "int8": LogicalType("int64"),
    "float4": LogicalType("float32"), "float8": LogicalType("float64"), "text": LogicalType("string"),
    "bool": LogicalType("bool"), "date": LogicalType("date"), "time": LogicalType("time"),
    "timestamp": LogicalType("timestamp"), "timestamptz": LogicalType("timestamptz"),
    "bytea": LogicalType("binary"), "uuid": LogicalType("uuid"), "json": LogicalType("json"),
    "jsonb": LogicalType("json"),
}
MAX_ARROW_DECIMAL = 76  # decimal256; wider numerics travel as text

_FIND_TABLE = """
SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""
# domains are described by their base type (one level), which is also what binary COPY sends
_COLUMNS = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, bt.typname,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
       CASE WHEN a.attgenerated = 's' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_PRIMARY_KEY = """
SELECT a.attname
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisprimary
ORDER BY k.ord
"""

# unique indexes checked row by row as rows go in (not deferred), on plain columns, for every row
_IMMEDIATE_UNIQUE_KEYS = """
SELECT array_agg(a.attname ORDER BY a.attname)
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey) AS k(attnum)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indimmediate AND i.indisvalid
  AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid
"""


# reltuples is -1 until the table is first vacuumed or analyzed (PostgreSQL 14+)
_ESTIMATE = "SELECT c.reltuples::bigint FROM pg_catalog.pg_class c WHERE c.oid = %s::regclass"
_INDEXES = """
SELECT ic.relname, i.indisunique, i.indisprimary,
       array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord)
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = %s::regclass AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
ORDER BY i.indisprimary DESC, ic.relname
"""
_INCREASING = """
SELECT a.attname FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
  AND (a.attidentity IN ('a', 'd') OR pg_catalog.pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%%')
ORDER BY a.attnum
"""


def estimate_rows(conn: psycopg.Connection[Any], table: TableName) -> int | None:
    row = conn.execute(_ESTIMATE, (qualified(with_schema(table), quote_double),)).fetchone()
    return None if row is None or row[0] < 0 else int(row[0])


def indexes(conn: psycopg.Connection[Any], table: TableName) -> list[IndexInfo]:
    rows = conn.execute(_INDEXES, (qualified(with_schema(table), quote_double),)).fetchall()
    return [IndexInfo(name, tuple(columns), unique, primary) for name, unique, primary, columns in rows]


def increasing_columns(conn: psycopg.Connection[Any], table: TableName) -> tuple[str, ...]:
    return tuple(r[0] for r in conn.execute(_INCREASING, (qualified(with_schema(table), quote_double),)))


@dataclass(frozen=True)
class NativeColumn:
    """A column as the catalog describes it: ``base_type`` is the pg_type name binary COPY speaks."""

    name: str
    native_type: str
    base_type: str
    not_null: bool
    logical: LogicalType
    generated: str | None = None
    """A stored generated column's expression: the server computes it, a load never writes it."""


def with_schema(table: TableName) -> TableName:
    return table if table.schema else TableName(table.name, DEFAULT_SCHEMA)


def reflect_native(conn: psycopg.Connection[Any], table: TableName) -> tuple[list[NativeColumn],
                                                                              tuple[str, ...]] | None:
    """The table's columns and primary key, or None when it does not exist."""
    full = with_schema(table)
    with conn.cursor() as cur:
        row = cur.execute(_FIND_TABLE, (full.schema, full.name)).fetchone()
        if row is None:
            return None
        oid = row[0]
        columns = [NativeColumn(name, native, base, notnull, logical_type(base, typmod), generated)
                   for name, native, notnull, base, typmod, generated in cur.execute(_COLUMNS, (oid,)).fetchall()]
        key = tuple(r[0] for r in cur.execute(_PRIMARY_KEY, (oid,)).fetchall())
    return columns, key


def has_unique_key(conn: psycopg.Connection[Any], table: TableName, columns: Sequence[str]) -> bool:
    """Whether a unique index on exactly ``columns`` rejects a duplicate the moment it is inserted."""
    wanted = sorted(columns)
    with conn.cursor() as cur:
        found = cur.execute(_IMMEDIATE_UNIQUE_KEYS, (qualified(with_schema(table), quote_double),)).fetchall()
    return any(list(names) == wanted for (names,) in found)


def reflect(conn: psycopg.Connection[Any], table: TableName) -> TableSchema | None:
    found = reflect_native(conn, table)
    if found is None:
        return None
    columns, key = found
    return TableSchema(
        table=with_schema(table),
        columns=tuple(Column(c.name, c.logical, nullable=not c.not_null, native_type=c.native_type,
                             generated=c.generated) for c in columns),
        primary_key=key,
    )


def logical_type(base_type: str, typmod: int) -> LogicalType:
    if base_type == "numeric":
        return _numeric(typmod)
    if base_type in ("varchar", "bpchar"):
        return LogicalType("string", length=typmod - 4 if typmod >= 4 else None)
    return _SIMPLE.get(base_type, LogicalType("string"))


def _numeric(typmod: int) -> LogicalType:
    if typmod < 4:
        return LogicalType("decimal")
    packed = typmod - 4
    precision = (packed >> 16) & 0xFFFF
    scale = ((packed & 0x7FF) ^ 1024) - 1024  # PostgreSQL 15 allows a negative scale (11-bit signed)
    if scale < 0 or scale > precision or precision > MAX_ARROW_DECIMAL:
        return LogicalType("decimal")  # Arrow cannot carry it exactly: travel as text
    return LogicalType("decimal", precision=precision, scale=scale)


# ---------------------------------------------------------------- reading


_TEXT_NATIVE = re.compile(r"^(text|character varying|character)(\(\d+\))?$")
_PARAMS = re.compile(r"\(\d+(,\d+)?\)")
# logical kind -> (type binary COPY sends, format_type spellings that need no cast)
_READ: dict[str, tuple[str, tuple[str, ...]]] = {
    "int16": ("int2", ("smallint",)),
    "int32": ("int4", ("integer",)),
    "int64": ("int8", ("bigint",)),
    "float32": ("float4", ("real",)),
    "float64": ("float8", ("double precision",)),
    "bool": ("bool", ("boolean",)),
    "date": ("date", ("date",)),
    "time": ("time", ("time without time zone",)),
    "timestamp": ("timestamp", ("timestamp without time zone",)),
    "timestamptz": ("timestamptz", ("timestamp with time zone",)),
    "binary": ("bytea", ("bytea",)),
}


def read_cast(column: Column) -> tuple[str | None, str]:
    """``(cast or None, copy type)`` so that binary COPY hands out values Arrow takes for the logical type.

    uuid, json, unconstrained numeric and unknown types are cast to text on the server: cheaper than
    building Python objects (UUID, parsed JSON) only to turn them into strings.
    """
    kind = column.type.kind
    native = _PARAMS.sub("", column.native_type)
    if kind == "decimal" and column.type.precision is not None:
        return (None if native == "numeric" else _numeric_sql(column.type)), "numeric"
    if kind == "string":
        return (None if _TEXT_NATIVE.match(column.native_type) else "text"), "text"
    if kind in _READ:
        copy_type, natural = _READ[kind]
        return (None if native in natural else copy_type), copy_type
    return "text", "text"  # uuid, json, numeric without precision


def read_expression(column: Column) -> tuple[str, str]:
    """``(SQL expression, copy type)`` reading ``column`` for binary COPY (see :func:`read_cast`)."""
    name = quote_double(column.name)
    cast, copy_type = read_cast(column)
    output = _OUTPUT_FUNCTION.get(column.native_type)
    if cast == "text" and output:
        return f"{output}({name})::text", copy_type
    return (f"{name}::{cast}" if cast else name), copy_type


_OUTPUT_FUNCTION = {"inet": "inet_out"}
"""Types whose ``::text`` differs from their output text (``text(inet)`` adds the netmask: ``10.0.0.1/32``):
read through the output function, as CSV COPY and logical replication spell them (``10.0.0.1``)."""


def _numeric_sql(t: LogicalType) -> str:
    return f"numeric({t.precision},{t.scale or 0})"


# ---------------------------------------------------------------- writing (DDL)


def sqlalchemy_type(t: LogicalType) -> TypeEngine[Any]:
    from sqlalchemy import types as sa
    from sqlalchemy.dialects import postgresql as pg

    if t.kind == "decimal":
        return sa.Numeric(t.precision, t.scale or 0) if t.precision is not None else sa.Numeric()
    if t.kind == "string":
        return sa.String(t.length) if t.length else sa.Text()
    simple: dict[str, TypeEngine[Any]] = {
        "int16": sa.SmallInteger(), "int32": sa.Integer(), "int64": sa.BigInteger(),
        "float32": pg.REAL(), "float64": pg.DOUBLE_PRECISION(), "bool": sa.Boolean(), "date": sa.Date(),
        "time": pg.TIME(), "timestamp": pg.TIMESTAMP(timezone=False), "timestamptz": pg.TIMESTAMP(timezone=True),
        "binary": pg.BYTEA(), "uuid": pg.UUID(), "json": pg.JSONB(),
    }
    return simple[t.kind]


def _dialect() -> Any:
    from sqlalchemy.dialects import postgresql as pg

    # "named" paramstyle: SQLAlchemy doubles % in identifiers for the pyformat styles, which we never bind
    return pg.dialect(paramstyle="named")


def create_table_sql(schema: TableSchema, primary_key: bool) -> str:
    from sqlalchemy import Column as SaColumn
    from sqlalchemy import Computed, MetaData, PrimaryKeyConstraint, Table
    from sqlalchemy.schema import CreateTable
    from sqlalchemy.sql.elements import quoted_name

    table = with_schema(schema.table)
    # a generated column stays generated: the server computes every row's value, loads and changes alike
    columns: list[Any] = [
        SaColumn(quoted_name(c.name, True), sqlalchemy_type(c.type),
                 *([Computed(c.generated, persisted=True)] if c.generated else []), nullable=c.nullable,
                 autoincrement=False)
        for c in schema.columns
    ]
    if primary_key and schema.primary_key:
        columns.append(PrimaryKeyConstraint(*[quoted_name(k, True) for k in schema.primary_key]))
    sa_table = Table(quoted_name(table.name, True), MetaData(), *columns,
                     schema=quoted_name(table.schema or DEFAULT_SCHEMA, True))
    return str(CreateTable(sa_table).compile(dialect=_dialect())).strip()


def type_sql(t: LogicalType) -> str:
    return str(sqlalchemy_type(t).compile(dialect=_dialect()))


def column_list(names: Sequence[str]) -> str:
    from copyjob.connectors._sql import quote_double

    return ", ".join(quote_double(n) for n in names)
