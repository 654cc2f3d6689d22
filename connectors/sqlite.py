"""SQLite as a source and a destination (stdlib ``sqlite3``).

SQLite stores values by *storage class*, not by declared type, so this connector fixes how each logical type is
stored and converts exactly on the way back (table in docs/types-sqlite.md):

- timestamps are fixed-width ISO text ``YYYY-MM-DD HH:MM:SS.ffffff`` (timestamptz: UTC with ``+00:00``), so that
  comparisons, ``MAX`` and range filters work on the text;
- ``decimal(p<=15,s)`` is ``NUMERIC(p,s)``: SQLite's NUMERIC affinity turns the text we bind into INTEGER/REAL,
  which is lossless up to 15 significant digits; wider decimals are ``DECIMAL_TEXT(p,s)`` (TEXT affinity, every
  digit kept). Filters and MIN/MAX on decimal columns compare ``CAST(col AS REAL)`` and break ties exactly.
- An SQLite file is a single schema: a TableName schema other than None or ``main`` is a ConfigurationError.

One writer at a time: each load session opens its own connection and holds SQLite's write lock from
``begin_load`` to commit; a second concurrent load waits (busy timeout) and then fails as ConnectionFailed.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pt
from copyjob.connectors._append import duplicate_key_error, key_index_sql
from copyjob.connectors._arrow import rows_to_batch
from copyjob.connectors._keys import check_delete_batch, last_per_key, match_key, update_targets
from copyjob.connectors._load_checks import check_load_key
from copyjob.connectors._sql import STATE_TABLE, quote_double, render_filters

from copyjob.core import temporal
from copyjob.core.contracts import (
    DestinationCapabilities,
    IndexInfo,
    RowDigests,
    RowFilter,
    SourceCapabilities,
    StateMarker,
    UpdateMethod,
)
from copyjob.core.errors import (
    ConfigurationError,
    ConnectionFailed,
    ConnectorError,
    DataError,
    TableNotFound,
)
from copyjob.core.private import create_private_file, make_private_folder
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema, arrow_type
from copyjob.core.urls import ConnectionUrl

BUSY_TIMEOUT_S = 60.0
_NUMERIC_DIGITS = 15  # a double keeps 15 significant decimal digits through text -> REAL -> text
_UTC = dt.UTC
_WIDE = decimal.Context(prec=200)

Converter = Callable[[Any], Any]


# ---------------------------------------------------------------- naming


def _table_sql(table: TableName) -> str:
    """The quoted table name; SQLite files have one schema, so only None/'main' are accepted."""
    if table.schema not in (None, "main"):
        raise ConfigurationError(f"SQLite has no schema {table.schema!r} (use the bare table name for {table})")
    return quote_double(table.name)


# ---------------------------------------------------------------- declared type <-> logical type

_DECLARED = re.compile(r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_ ]*?)\s*(?:\(\s*(?P<p>\d+)\s*(?:,\s*(?P<s>\d+)\s*)?\))?\s*$")
_BY_NAME: dict[str, LogicalType] = {
    **{n: LogicalType("int64") for n in ("INTEGER", "INT", "BIGINT", "INT8", "UNSIGNED BIG INT")},
    **{n: LogicalType("int32") for n in ("INT4", "MEDIUMINT")},
    **{n: LogicalType("int16") for n in ("SMALLINT", "INT2", "TINYINT")},
    **{n: LogicalType("float64") for n in ("REAL", "DOUBLE", "DOUBLE PRECISION", "FLOAT", "FLOAT8")},
    "FLOAT4": LogicalType("float32"),
    **{n: LogicalType("bool") for n in ("BOOLEAN", "BOOL")},
    "DATE": LogicalType("date"),
    "TIME": LogicalType("time"),
    **{n: LogicalType("timestamp") for n in ("DATETIME", "TIMESTAMP", "TIMESTAMP WITHOUT TIME ZONE")},
    **{n: LogicalType("timestamptz") for n in ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE", "DATETIMETZ")},
    "BLOB": LogicalType("binary"),
    "UUID": LogicalType("uuid"),
    **{n: LogicalType("json") for n in ("JSON", "JSONB")},
}


def logical_from_declared(declared: str) -> LogicalType:
    """The logical type of an SQLite declared column type (by name first, then by SQLite's affinity rules)."""
    m = _DECLARED.match(declared)
    if m is None:
        return LogicalType("string")
    name = " ".join(m["name"].upper().split())
    p = int(m["p"]) if m["p"] else None
    if name in _BY_NAME:
        return _BY_NAME[name]
    if "DEC" in name or "NUMERIC" in name:
        return LogicalType("decimal", precision=p, scale=int(m["s"] or 0) if p is not None else None)
    if "INT" in name:
        return LogicalType("int64")
    if any(part in name for part in ("REAL", "FLOA", "DOUB")):
        return LogicalType("float64")
    if "CHAR" in name and p is not None:
        return LogicalType("string", length=p)
    return LogicalType("string")


def declared_from_logical(t: LogicalType) -> str:
    """The declared type we create for a logical type; reflecting it gives the same logical type back."""
    if t.kind == "decimal":
        if t.precision is None:
            return "DECIMAL_TEXT"
        name = "NUMERIC" if t.precision <= _NUMERIC_DIGITS else "DECIMAL_TEXT"
        return f"{name}({t.precision},{t.scale or 0})"
    if t.kind == "string":
        return f"VARCHAR({t.length})" if t.length else "TEXT"
    return {
        "int16": "SMALLINT", "int32": "INT4", "int64": "BIGINT", "float32": "FLOAT4", "float64": "REAL",
        "bool": "BOOLEAN", "date": "DATE", "time": "TIME", "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ", "binary": "BLOB", "uuid": "UUID", "json": "JSON",
    }[t.kind]


def create_table_sql(schema: TableSchema, primary_key: Sequence[str]) -> str:
    sole_int_key = len(primary_key) == 1 and _is_int64(schema.column(primary_key[0]))
    parts = []
    for c in schema.columns:
        # a lone INTEGER PRIMARY KEY is SQLite's rowid: the table is stored in key order, no extra index
        declared = "INTEGER" if sole_int_key and c.name == primary_key[0] else declared_from_logical(c.type)
        not_null = " NOT NULL" if not c.nullable or c.name in primary_key else ""
        parts.append(f"{quote_double(c.name)} {declared}{not_null}")
    if primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(quote_double(k) for k in primary_key)})")
    return f"CREATE TABLE {_table_sql(schema.table)} ({', '.join(parts)})"


def _is_int64(c: Column | None) -> bool:
    return c is not None and c.type.kind == "int64"


def reflect_table(con: sqlite3.Connection, table: TableName) -> TableSchema | None:
    """Columns and primary key from ``pragma_table_info``; None when the table does not exist."""
    _table_sql(table)  # refuses a schema other than main
    rows = con.execute(
        "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?, 'main') ORDER BY cid", (table.name,)
    ).fetchall()
    if not rows:
        return None
    key = tuple(name for name, _, _, pk in sorted(rows, key=lambda r: r[3]) if pk)
    columns = tuple(
        Column(name=name, type=logical_from_declared(declared or ""), nullable=not notnull and name not in key,
               native_type=declared or "")
        for name, declared, notnull, _ in rows
    )
    return TableSchema(table=table, columns=columns, primary_key=key)


# ---------------------------------------------------------------- stored value -> logical value (reading)


def _to_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return repr(v) if isinstance(v, float) else str(v)


_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _to_float(v: Any) -> float:
    """A stored REAL, or the TEXT ``NaN`` that :func:`stored_column` writes for NaN (SQLite stores a NaN REAL
    as NULL)."""
    if type(v) is str:
        special = _SPECIAL_FLOATS.get(v)
        return special if special is not None else float(v)
    return float(v)


def _to_uuid(v: Any) -> str:
    if isinstance(v, bytes) and len(v) == 16:
        return str(uuid.UUID(bytes=v))
    return _to_text(v)


def _to_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "t", "true", "y", "yes")
    return bool(v)


def _to_bytes(v: Any) -> bytes:
    return v.encode() if isinstance(v, str) else bytes(v)


def _to_datetime(v: Any) -> dt.datetime:
    """Stored text (or unix epoch seconds) as a datetime. Arrow converts aware values to UTC for us: an aware
    value stored in a timestamp column becomes naive UTC, a naive one in a timestamptz column is taken as UTC."""
    if type(v) is str:
        return dt.datetime.fromisoformat(v)
    if isinstance(v, int | float):  # unix epoch seconds, as some applications store them
        return dt.datetime(1970, 1, 1, tzinfo=_UTC) + dt.timedelta(seconds=v)
    raise TypeError(f"cannot read {v!r} as a timestamp")


def _to_date(v: Any) -> dt.date:
    return dt.date.fromisoformat(v[:10]) if isinstance(v, str) else _to_datetime(v).date()


def _to_time(v: Any) -> dt.time:
    return dt.time.fromisoformat(v) if isinstance(v, str) else _to_datetime(v).time()


def _decimal_reader(scale: int) -> Converter:
    quantum = decimal.Decimal(1).scaleb(-scale)

    def convert(v: Any) -> decimal.Decimal:
        if type(v) is float:  # REAL storage is approximate anyway: round to the declared scale
            return decimal.Decimal(repr(v)).quantize(quantum, context=_WIDE)
        return decimal.Decimal(v if type(v) is str else _to_text(v))

    return convert


def reader_for(t: LogicalType) -> Converter | None:
    """How a stored SQLite value becomes the Python value Arrow expects for ``t`` (None: as it is)."""
    if t.kind == "decimal":
        return _decimal_reader(t.scale or 0) if t.precision is not None else _to_text
    return {
        "string": _to_text, "json": _to_text, "uuid": _to_uuid, "bool": _to_bool, "binary": _to_bytes,
        "date": _to_date, "time": _to_time, "timestamp": _to_datetime, "timestamptz": _to_datetime,
        "float32": _to_float, "float64": _to_float,
    }.get(t.kind)


def _python_value(raw: Any, t: LogicalType) -> Any:
    """One stored value as the same Python value ``read`` would produce (via Arrow, for identical rounding)."""
    if raw is None:
        return None
    conv = reader_for(t)
    return pa.array([conv(raw) if conv else raw], type=arrow_type(t)).to_pylist()[0]


# ---------------------------------------------------------------- logical value -> stored value (writing)


def stored_column(values: pa.Array, t: LogicalType) -> list[Any]:
    """An Arrow column as the Python values we bind for ``t`` (vectorised text formatting)."""
    if t.kind == "decimal":
        values = values.cast(pa.string())
    elif t.kind in ("date", "time", "timestamp"):
        # timestamp(us) → 'YYYY-MM-DD HH:MM:SS.ffffff'; infinity, BC, 24:00 as PostgreSQL spells them
        values = temporal.as_pg_text(values)
    elif t.kind == "timestamptz":
        utc = values.cast(pa.timestamp("us", tz="UTC"))
        utc_text = pc.binary_join_element_wise(utc.cast(pa.timestamp("us")).cast(pa.string()), "+00:00", "")
        special = temporal.beyond_python(utc)
        values = utc_text if special is None else pc.if_else(special, temporal.as_pg_text(utc), utc_text)
    elif t.kind in ("float32", "float64") and pt.is_floating(values.type) and pc.any(pc.is_nan(values)).as_py():
        # SQLite stores a NaN REAL as NULL: keep it as the TEXT 'NaN', which REAL affinity leaves as text
        return ["NaN" if v is not None and math.isnan(v) else v for v in values.to_pylist()]
    return list(values.to_pylist())


def _iso(value: dt.datetime) -> str:
    return value.isoformat(sep=" ", timespec="microseconds")


def bound_value(value: Any) -> Any:
    """A filter value bound as :func:`stored_value` stores it, its type taken from the value (``copyjob
    verify``'s ranges and watermarks): ``updated_at <= watermark`` keeps the rows stored at the watermark."""
    if isinstance(value, dt.datetime):
        return stored_value(value, LogicalType("timestamptz" if value.tzinfo is not None else "timestamp"))
    if isinstance(value, dt.time):
        return stored_value(value, LogicalType("time"))
    if isinstance(value, dt.date):
        return stored_value(value, LogicalType("date"))
    if isinstance(value, bool):
        return stored_value(value, LogicalType("bool"))
    return str(value) if isinstance(value, uuid.UUID) else value


def stored_value(value: Any, t: LogicalType) -> Any:
    """A filter bound as the stored representation, so SQLite compares like with like."""
    if value is None:
        return None
    if t.kind in ("timestamp", "timestamptz"):
        when = value if isinstance(value, dt.datetime) else _to_datetime(value)
        if t.kind == "timestamptz":
            return _iso(when.replace(tzinfo=_UTC) if when.tzinfo is None else when.astimezone(_UTC))
        return _iso(when if when.tzinfo is None else when.astimezone(_UTC).replace(tzinfo=None))
    if t.kind == "time" and isinstance(value, dt.time):
        return value.isoformat(timespec="microseconds")
    if t.kind == "date" and isinstance(value, dt.date):
        return (value.date() if isinstance(value, dt.datetime) else value).isoformat()
    if t.kind == "decimal":
        return float(value)  # compared with CAST(col AS REAL), see _where
    if t.kind == "bool":
        return int(bool(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


# ---------------------------------------------------------------- shared SQL helpers


def _where(filters: Sequence[RowFilter], types: dict[str, LogicalType]) -> tuple[str, list[Any]]:
    decimals = {name for name, t in types.items() if t.kind == "decimal"}

    def column_sql(name: str) -> str:
        # decimal storage may be TEXT (wide decimals): compare numerically, not lexically
        return f"CAST({quote_double(name)} AS REAL)" if name in decimals else quote_double(name)

    sql, params = render_filters(filters, column_sql, placeholder="?")
    values = iter(params)
    bound: list[Any] = []
    for f in filters:
        t = types.get(f.column, LogicalType("string"))
        for b in (f.lower, f.upper):
            if b is not None and not f.only_nulls:
                bound.append(stored_value(next(values), t))
    return sql, bound


def _translate(exc: sqlite3.Error, what: str) -> ConnectorError:
    text = str(exc)
    if "no such table" in text:
        return TableNotFound(f"SQLite: {what}: {text}")
    if "locked" in text or "busy" in text:
        return ConnectionFailed(f"SQLite: {what}: {text}")
    if isinstance(exc, sqlite3.IntegrityError):
        return DataError(f"SQLite: {what}: {text}")
    return ConnectorError(f"SQLite: {what}: {text}")


FETCH_ROWS = 1_000
"""Rows fetched from SQLite per call while reading (a batch is built from several)."""


def _connect(target: str, *, uri: bool = False) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves; connections may move between worker threads
    return sqlite3.connect(target, uri=uri, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                           check_same_thread=False)


# ---------------------------------------------------------------- source


class SqliteSource:
    capabilities = SourceCapabilities()

    def __init__(self, url: ConnectionUrl) -> None:
        self._url = url
        path = url.path or Path(":memory:")
        if str(path) != ":memory:" and not path.is_file():
            raise ConnectionFailed(f"SQLite database file not found: {path}", retriable=False)
        try:
            # mode=ro never creates the file and never takes the write lock
            self._con = _connect(":memory:" if str(path) == ":memory:" else f"{path.resolve().as_uri()}?mode=ro",
                                 uri=True)
        except sqlite3.Error as exc:
            raise ConnectionFailed(f"cannot open SQLite database {path}: {exc}") from exc

    def reflect(self, table: TableName) -> TableSchema:
        schema = reflect_table(self._con, table)
        if schema is None:
            raise TableNotFound(f"table {table} not found in SQLite database {self._url.path}")
        return schema

    def table_names(self) -> list[TableName]:
        rows = self._con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                 "AND name NOT LIKE 'sqlite%'").fetchall()
        return [TableName(str(name)) for (name,) in rows]

    def estimate_rows(self, table: TableName) -> int | None:
        """An exact count: SQLite keeps no statistics, and its files are small enough to count."""
        return self.count(table)

    def indexes(self, table: TableName) -> list[IndexInfo]:
        schema = self.reflect(table)
        found = [IndexInfo("PRIMARY KEY", schema.primary_key, True, True)] if schema.primary_key else []
        for _, name, unique, origin, partial in self._con.execute(
                "SELECT seq, name, \"unique\", origin, partial FROM pragma_index_list(?) ORDER BY seq",
                (table.name,)).fetchall():
            columns = [c for (c,) in self._con.execute(
                "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (name,)).fetchall()]
            if origin != "pk" and not partial and None not in columns:  # None: an expression
                found.append(IndexInfo(str(name), tuple(columns), bool(unique)))
        return found

    def increasing_columns(self, table: TableName) -> tuple[str, ...]:
        """An ``INTEGER PRIMARY KEY`` is the rowid: SQLite assigns one more than the largest."""
        schema = self.reflect(table)
        if len(schema.primary_key) == 1:
            column = schema.column(schema.primary_key[0])
            if column is not None and column.native_type.strip().upper() == "INTEGER":
                return schema.primary_key
        return ()

    def read(self, schema: TableSchema, filters: Sequence[RowFilter] = (),
             batch_rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        columns = ", ".join(quote_double(c.name) for c in schema.columns)
        where, params = _where(filters, self._types(schema, filters))
        converters = [reader_for(c.type) for c in schema.columns]
        # text and float columns almost always hold text and floats: try Arrow's own conversion first, convert
        # per value on failure (a float column holds the TEXT 'NaN' for NaN)
        fast = [None if c.type.kind in ("string", "json", "float32", "float64") else conv
                for c, conv in zip(schema.columns, converters, strict=True)]
        cur = self._execute(f"SELECT {columns} FROM {_table_sql(schema.table)}{where}", params, schema.table)
        try:
            rows: list[Any] = []
            # fetched in small steps: Python runs signal handlers only between them, so Ctrl-C stops a slow
            # read (a view, a big scan) at once instead of after a whole batch
            while chunk := cur.fetchmany(min(FETCH_ROWS, batch_rows - len(rows))):
                rows.extend(chunk)
                if len(rows) >= batch_rows:
                    yield self._batch(rows, schema, fast, converters)
                    rows = []
            if rows:
                yield self._batch(rows, schema, fast, converters)
        finally:
            cur.close()

    def max_value(self, table: TableName, column: str) -> Any:
        return self._extreme(table, column, "MAX")

    def count(self, table: TableName, filters: Sequence[RowFilter] = ()) -> int:
        where, params = _where(filters, {c.name: c.type for c in self.reflect(table).columns})
        return int(self._execute(f"SELECT COUNT(*) FROM {_table_sql(table)}{where}", params, table).fetchone()[0])

    def key_range(self, table: TableName, column: str) -> tuple[Any, Any]:
        return self._extreme(table, column, "MIN"), self._extreme(table, column, "MAX")

    def copy_out_binary(self, schema: TableSchema, filters: Sequence[RowFilter] = ()) -> Iterator[bytes]:
        raise ConfigurationError("SQLite cannot produce a PostgreSQL binary COPY stream")

    def clone(self) -> SqliteSource:
        return SqliteSource(self._url)

    def digests(self) -> RowDigests:
        """Row counts and hashes computed in the database (``copyjob verify``)."""
        from copyjob.connectors._digest_sql import sqlite_digests

        return sqlite_digests(self._con, bind=bound_value)

    def close(self) -> None:
        self._con.close()

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _batch(rows: list[Any], schema: TableSchema, fast: list[Converter | None],
               converters: list[Converter | None]) -> pa.RecordBatch:
        arrow_schema = schema.arrow_schema()
        try:
            return rows_to_batch(rows, arrow_schema, fast)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        try:
            return rows_to_batch(rows, arrow_schema, converters)
        except (pa.ArrowException, ValueError, TypeError, decimal.InvalidOperation) as exc:
            raise DataError(f"SQLite: {schema.table}: a value does not fit its column type: {exc}") from exc

    def _types(self, schema: TableSchema, filters: Sequence[RowFilter]) -> dict[str, LogicalType]:
        types = {c.name: c.type for c in schema.columns}
        if any(f.column not in types for f in filters):  # filtering on a column that is not read
            types = {c.name: c.type for c in self.reflect(schema.table).columns} | types
        return types

    def _extreme(self, table: TableName, column: str, fn: str) -> Any:
        c = self.reflect(table).column(column)
        if c is None:
            raise ConfigurationError(f"column {column!r} not found in SQLite table {table}")
        col, tbl = quote_double(column), _table_sql(table)
        if c.type.kind != "decimal":
            raw = self._execute(f"SELECT {fn}({col}) FROM {tbl}", [], table).fetchone()[0]
            return _python_value(raw, c.type)
        # decimals may be stored as TEXT: find the candidates numerically, then pick exactly in Python
        real = f"CAST({col} AS REAL)"
        rows = self._execute(f"SELECT {col} FROM {tbl} WHERE {real} = (SELECT {fn}({real}) FROM {tbl})",
                             [], table).fetchall()
        values = [_python_value(r[0], c.type) for r in rows if r[0] is not None]
        if not values:
            return None
        return max(values) if fn == "MAX" else min(values)

    def _execute(self, sql: str, params: Sequence[Any], table: TableName) -> sqlite3.Cursor:
        try:
            return self._con.execute(sql, params)
        except sqlite3.Error as exc:
            raise _translate(exc, str(table)) from exc


# ---------------------------------------------------------------- destination


_STATE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {quote_double(STATE_TABLE)} ("
    '"job" TEXT NOT NULL, "table" TEXT NOT NULL, "run_id" TEXT NOT NULL, "state" TEXT NOT NULL, '
    '"committed_at" TEXT NOT NULL, PRIMARY KEY ("job", "table"))'
)


class SqliteDestination:
    capabilities = DestinationCapabilities(transactional=True, supports_merge=True, markers_alone=True)

    def __init__(self, url: ConnectionUrl) -> None:
        self._path = url.path or Path(":memory:")
        if str(self._path) != ":memory:":
            make_private_folder(self._path.parent)
            create_private_file(self._path)  # 0600; SQLite gives its -wal, -shm and -journal files its mode
        try:
            self._con = _connect(str(self._path))
        except sqlite3.Error as exc:
            raise ConnectionFailed(f"cannot open SQLite database {self._path}: {exc}") from exc

    def reflect(self, table: TableName) -> TableSchema | None:
        return reflect_table(self._con, table)

    def create_table(self, schema: TableSchema, *, primary_key: bool = True, key_index: bool = False) -> None:
        self._run(create_table_sql(schema, schema.primary_key if primary_key else ()), schema.table)
        if key_index and not primary_key and schema.primary_key:  # SQLite names no schema after ON
            self._run(key_index_sql(TableName(schema.table.name), schema.primary_key, quote_double), schema.table)

    def add_columns(self, table: TableName, columns: Sequence[Column]) -> None:
        # SQLite cannot add a NOT NULL column without a default: added columns are nullable (old rows lack them)
        for c in columns:
            self._run(f"ALTER TABLE {_table_sql(table)} ADD COLUMN {quote_double(c.name)} "
                      f"{declared_from_logical(c.type)}", table)

    def drop_table(self, table: TableName) -> None:
        self._run(f"DROP TABLE IF EXISTS {_table_sql(table)}", table)

    def begin_load(self, schema: TableSchema, method: UpdateMethod, key: Sequence[str],
                   truncate: bool = False, deferred_key: Sequence[str] = ()) -> SqliteLoadSession:
        check_load_key(schema, method, key)
        if str(self._path) == ":memory:":
            raise ConfigurationError("an in-memory SQLite database cannot be loaded from a separate session")
        self._run(_STATE_DDL, TableName(STATE_TABLE))
        return SqliteLoadSession(_connect(str(self._path)), schema, method, key,
                                 truncate or method == "overwrite", deferred_key)

    def read_marker(self, job: str, table: str) -> StateMarker | None:
        exists = self._con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                   (STATE_TABLE,)).fetchone()
        if not exists:
            return None
        row = self._con.execute(
            f'SELECT "run_id", "state" FROM {quote_double(STATE_TABLE)} WHERE "job" = ? AND "table" = ?',
            (job, table)).fetchone()
        return StateMarker(job=job, table=table, run_id=row[0], state=json.loads(row[1])) if row else None

    def write_marker(self, marker: StateMarker) -> None:
        self._run(_STATE_DDL, TableName(STATE_TABLE))
        try:
            _upsert_marker(self._con, marker)  # autocommit: the statement is its own transaction
        except sqlite3.Error as exc:
            raise _translate(exc, STATE_TABLE) from exc

    def digests(self) -> RowDigests:
        """Row counts and hashes computed in the database (``copyjob verify``)."""
        from copyjob.connectors._digest_sql import sqlite_digests

        return sqlite_digests(self._con, bind=bound_value)

    def close(self) -> None:
        self._con.close()

    def _run(self, sql: str, table: TableName) -> None:
        try:
            self._con.execute(sql)
        except sqlite3.Error as exc:
            raise _translate(exc, str(table)) from exc


class SqliteLoadSession:
    """One load on its own connection, inside one ``BEGIN IMMEDIATE … COMMIT``.

    Merge stages rows in a TEMP table and applies them at commit (delete matching keys, insert the last staged
    row of each key), so it works whether or not the table has a unique index on the key.
    """

    def __init__(self, con: sqlite3.Connection, schema: TableSchema, method: UpdateMethod, key: Sequence[str],
                 truncate: bool, deferred_key: Sequence[str]) -> None:
        self._con, self._schema, self._key, self._deferred_key = con, schema, tuple(key), tuple(deferred_key)
        self._append = method == "append"
        self._table = _table_sql(schema.table)
        self._arrow_schema = schema.arrow_schema()
        self._columns = ", ".join(quote_double(c.name) for c in schema.columns)
        self._stage = f'temp."__copyjob_stage_{uuid.uuid4().hex[:12]}"' if method == "merge" else None
        target = self._stage or self._table
        marks = ", ".join("?" for _ in schema.columns)
        self._insert = f"INSERT INTO {target} ({self._columns}) VALUES ({marks})"
        self._open = True
        try:
            con.execute("BEGIN IMMEDIATE")  # take the write lock now rather than fail half-way
            if truncate:
                con.execute(f"DELETE FROM {self._table}")
            if self._stage:
                con.execute(f"CREATE TABLE {self._stage} AS SELECT {self._columns} FROM {self._table} WHERE 0")
        except sqlite3.Error as exc:
            self.abort()
            raise _translate(exc, str(schema.table)) from exc

    def write(self, batch: pa.RecordBatch) -> int:
        batch = _conform(batch, self._arrow_schema)
        for name in dict.fromkeys((*self._key, *self._deferred_key, *self._schema.primary_key)):
            # a sole INTEGER primary key is SQLite's rowid, which turns a NULL into a new id instead of refusing it
            if batch.column(name).null_count:
                raise DataError(f"{self._schema.table}: NULL in key column {name!r} (row "
                                f"{batch.column(name).is_null().to_pylist().index(True) + 1} of the batch)")
        columns = [stored_column(batch.column(i), c.type) for i, c in enumerate(self._schema.columns)]
        try:
            self._con.executemany(self._insert, zip(*columns, strict=True))
        except sqlite3.IntegrityError as exc:
            if self._append and "UNIQUE constraint failed" in str(exc):
                raise duplicate_key_error(self._schema.table, f"SQLite: {exc}") from exc
            raise _translate(exc, str(self._schema.table)) from exc
        except sqlite3.Error as exc:
            raise _translate(exc, str(self._schema.table)) from exc
        return int(batch.num_rows)

    def write_binary(self, chunks: Iterator[bytes]) -> int:
        raise ConfigurationError("SQLite does not accept a PostgreSQL binary COPY stream")

    # ------------------------------------------------------------ deletes and column updates by key
    # Effects in call order (connectors/_keys.py): applied to the table now, inside the transaction, and in a
    # merge session to the rows staged so far, so a later ``write`` of a key wins at commit.

    def delete_keys(self, keys: pa.RecordBatch) -> int:
        """Delete the rows whose key equals a row of ``keys`` (key columns only); returns the table rows
        deleted. One bound ``DELETE … WHERE k1 = ? AND …`` per key (executemany)."""
        key = self._match_key()
        check_delete_batch(keys, key, self._schema.table)
        if keys.num_rows == 0:
            return 0
        values = self._stored_rows(pa.Table.from_batches([keys]), key)
        where = " AND ".join(f"{quote_double(k)} = ?" for k in key)  # a NULL key matches nothing
        try:
            if self._stage:
                self._con.executemany(f"DELETE FROM {self._stage} WHERE {where}", values)
            return int(self._con.executemany(f"DELETE FROM {self._table} WHERE {where}", values).rowcount)
        except sqlite3.Error as exc:
            raise _translate(exc, str(self._schema.table)) from exc

    def update_columns(self, rows: pa.RecordBatch) -> int:
        """Set the non-key columns of ``rows`` on the rows with the same key (other columns untouched, keys not
        in the table ignored, the last row of a key in ``rows`` wins); returns the table rows updated."""
        key = self._match_key()
        others = update_targets(rows, key, self._schema.column_names, self._schema.table)
        if rows.num_rows == 0:
            return 0
        values = self._stored_rows(last_per_key(rows, key), [*others, *key])
        where = " AND ".join(f"{quote_double(k)} = ?" for k in key)
        try:
            if not others:  # nothing to set: the rows that would have been updated
                return sum(int(self._con.execute(f"SELECT count(*) FROM {self._table} WHERE {where}", v)
                               .fetchone()[0]) for v in values)
            sets = ", ".join(f"{quote_double(c)} = ?" for c in others)
            if self._stage:
                self._con.executemany(f"UPDATE {self._stage} SET {sets} WHERE {where}", values)
            return int(self._con.executemany(f"UPDATE {self._table} SET {sets} WHERE {where}", values).rowcount)
        except sqlite3.Error as exc:
            raise _translate(exc, str(self._schema.table)) from exc

    def _match_key(self) -> tuple[str, ...]:
        """The load's key, else its deferred key, else the table's primary key."""
        if not self._open:
            raise ConnectorError(f"SQLite: the load into {self._schema.table} is already committed or aborted")
        primary: tuple[str, ...] = ()
        if not (self._key or self._deferred_key):
            found = reflect_table(self._con, self._schema.table)
            primary = found.primary_key if found else ()
        key = match_key(self._schema.table, self._key, self._deferred_key, primary)
        unknown = [k for k in key if self._schema.column(k) is None]
        if unknown:
            raise ConfigurationError(f"key column(s) {unknown} of {self._schema.table} are not among the columns "
                                     "loaded")
        return key

    def _stored_rows(self, table: pa.Table, names: Sequence[str]) -> list[tuple[Any, ...]]:
        """The columns ``names`` of ``table`` as rows of the values ``write`` would bind for them."""
        columns = []
        for name in names:
            column = self._schema.column(name)
            assert column is not None
            values = table.column(name).combine_chunks()
            target = arrow_type(column.type)
            columns.append(stored_column(values if values.type == target else values.cast(target), column.type))
        return list(zip(*columns, strict=True))

    def commit(self, marker: StateMarker | None) -> None:
        """1. apply staged merge rows; 2. add the deferred primary key; 3. upsert the marker; 4. COMMIT."""
        try:
            if self._stage:
                self._apply_merge(self._stage)
            if self._deferred_key:
                self._add_primary_key()
            if marker is not None:
                self._write_marker(marker)
            self._con.execute("COMMIT")
        except sqlite3.Error as exc:
            self.abort()
            raise _translate(exc, str(self._schema.table)) from exc
        self._close()

    def abort(self) -> None:
        if self._open and self._con.in_transaction:
            self._con.execute("ROLLBACK")
        self._close()

    # ------------------------------------------------------------ helpers

    def _apply_merge(self, stage: str) -> None:
        keys = ", ".join(quote_double(k) for k in self._key)
        self._con.execute(f"DELETE FROM {self._table} WHERE ({keys}) IN (SELECT {keys} FROM {stage})")
        # the highest rowid of a key in the stage is the last row written: last wins
        self._con.execute(
            f"INSERT INTO {self._table} ({self._columns}) SELECT {self._columns} FROM {stage} "
            f"WHERE rowid IN (SELECT MAX(rowid) FROM {stage} GROUP BY {keys})")
        self._con.execute(f"DROP TABLE {stage}")

    def _add_primary_key(self) -> None:
        """SQLite cannot ALTER a key onto a table: rebuild it with the key, keeping the declared types."""
        rows = self._con.execute("SELECT name, type, \"notnull\" FROM pragma_table_info(?, 'main') ORDER BY cid",
                                 (self._schema.table.name,)).fetchall()
        names = [r[0] for r in rows]
        parts = [f"{quote_double(n)} {t}{' NOT NULL' if nn or n in self._deferred_key else ''}"
                 for n, t, nn in rows]
        parts.append(f"PRIMARY KEY ({', '.join(quote_double(k) for k in self._deferred_key)})")
        rebuilt = quote_double(f"__copyjob_rebuild_{uuid.uuid4().hex[:12]}")
        all_columns = ", ".join(quote_double(n) for n in names)
        self._con.execute(f"CREATE TABLE {rebuilt} ({', '.join(parts)})")
        self._con.execute(f"INSERT INTO {rebuilt} ({all_columns}) SELECT {all_columns} FROM {self._table}")
        self._con.execute(f"DROP TABLE {self._table}")
        self._con.execute(f"ALTER TABLE {rebuilt} RENAME TO {self._table}")

    def _write_marker(self, marker: StateMarker) -> None:
        _upsert_marker(self._con, marker)

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._con.close()


def _upsert_marker(con: sqlite3.Connection, marker: StateMarker) -> None:
    con.execute(
        f'INSERT INTO {quote_double(STATE_TABLE)} ("job", "table", "run_id", "state", "committed_at") '
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (\"job\", \"table\") DO UPDATE SET "
        '"run_id" = excluded."run_id", "state" = excluded."state", "committed_at" = excluded."committed_at"',
        (marker.job, marker.table, marker.run_id, json.dumps(marker.state), _iso(dt.datetime.now(_UTC))))


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch's columns in ``schema`` order and types (columns are matched by name)."""
    arrays = []
    for f in schema:
        i = batch.schema.get_field_index(f.name)
        if i < 0:
            raise DataError(f"the batch has no column {f.name!r}")
        column = batch.column(i)
        arrays.append(column if column.type == f.type else column.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
