"""DuckDB as a source and a destination, moving data as Arrow both ways.

- Reading casts every column in SQL to the DuckDB type of its logical type (HUGEINT → DECIMAL(38,0), UUID and
  JSON → VARCHAR, TIMESTAMP_NS → TIMESTAMP …) and streams Arrow batches; writing registers each Arrow batch as a
  view and runs ``INSERT INTO t (cols) SELECT cols FROM batch``.
- Type mapping in docs/types-duckdb.md. Unconstrained decimals become DECIMAL(38,10) (digits beyond the tenth
  decimal place are rounded); decimals wider than 38 digits become VARCHAR (exact, but reflect as string).
- DuckDB lets one process write a file. Within a process every Source and Destination on the same file shares
  one database connection (a reference-counted cache) and works on its own cursor, so a source and a
  destination on one file both work. Each read and each load session gets a cursor of its own, because a
  DuckDB connection cannot start a query while a streamed result is still open.
- Sessions run ``SET TimeZone = 'UTC'``: naive timestamps compared with TIMESTAMPTZ columns are taken as UTC.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from copyjob.connectors._append import duplicate_key_error, key_index_sql
from copyjob.connectors._keys import (
    check_delete_batch,
    last_per_key,
    match_key,
    update_targets,
    without_null_keys,
)
from copyjob.connectors._load_checks import check_load_key
from copyjob.connectors._sql import STATE_TABLE, qualified, quote_double, render_filters

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
from copyjob.core.private import make_private_folder, restrict_created_file
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema, arrow_type
from copyjob.core.urls import ConnectionUrl

DEFAULT_SCHEMA = "main"
UNCONSTRAINED_DECIMAL = "DECIMAL(38,10)"
_MAX_PRECISION = 38

# ---------------------------------------------------------------- shared connections


class _SharedDatabase:
    """One duckdb connection per file within this process, handed out as cursors, closed with the last user."""

    _lock = threading.Lock()
    _open: dict[str, tuple[duckdb.DuckDBPyConnection, int]] = {}  # noqa: RUF012 - process-wide on purpose

    @classmethod
    def acquire(cls, path: Path) -> duckdb.DuckDBPyConnection:
        key = str(path)
        with cls._lock:
            root, users = cls._open.get(key, (None, 0))
            if root is None:
                try:
                    root = duckdb.connect(key)
                except duckdb.Error as exc:
                    raise ConnectionFailed(f"cannot open DuckDB database {path}: {exc}") from exc
            cls._open[key] = (root, users + 1)
            return _cursor(root)

    @classmethod
    def release(cls, path: Path) -> None:
        key = str(path)
        with cls._lock:
            root, users = cls._open[key]
            if users <= 1:
                del cls._open[key]
                root.close()
            else:
                cls._open[key] = (root, users - 1)


def _upsert_marker(cur: duckdb.DuckDBPyConnection, marker: StateMarker) -> None:
    cur.execute(
        f'INSERT INTO {DEFAULT_SCHEMA}.{quote_double(STATE_TABLE)} ("job", "table", "run_id", "state", '
        '"committed_at") VALUES (?, ?, ?, ?, ?) ON CONFLICT ("job", "table") DO UPDATE SET '
        '"run_id" = excluded."run_id", "state" = excluded."state", "committed_at" = excluded."committed_at"',
        [marker.job, marker.table, marker.run_id, json.dumps(marker.state), dt.datetime.now(dt.UTC)])


def _cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    cur = con.cursor()
    cur.execute("SET TimeZone = 'UTC'")
    return cur


def _database_path(url: ConnectionUrl, *, create: bool) -> Path:
    """The database file, resolved so that every spelling of one file shares one cache entry."""
    path = url.path or Path(":memory:")
    if str(path) == ":memory:":
        return path
    path = path.resolve()
    if create:
        make_private_folder(path.parent)
    elif not path.is_file():
        raise ConnectionFailed(f"DuckDB database file not found: {path}", retriable=False)
    return path


# ---------------------------------------------------------------- types

_DECLARED = re.compile(r"^(?P<name>[A-Z_ ]+?)\s*(?:\(\s*(?P<p>\d+)\s*(?:,\s*(?P<s>\d+)\s*)?\))?$")
_BY_NAME: dict[str, LogicalType] = {
    **{n: LogicalType("int16") for n in ("TINYINT", "SMALLINT", "UTINYINT", "INT1", "INT2")},
    **{n: LogicalType("int32") for n in ("INTEGER", "USMALLINT", "INT4", "INT")},
    **{n: LogicalType("int64") for n in ("BIGINT", "UINTEGER", "INT8")},
    "UBIGINT": LogicalType("decimal", precision=20, scale=0),
    "HUGEINT": LogicalType("decimal", precision=38, scale=0),
    **{n: LogicalType("float32") for n in ("FLOAT", "REAL", "FLOAT4")},
    **{n: LogicalType("float64") for n in ("DOUBLE", "FLOAT8")},
    **{n: LogicalType("string") for n in ("VARCHAR", "TEXT", "STRING")},
    **{n: LogicalType("bool") for n in ("BOOLEAN", "BOOL")},
    "DATE": LogicalType("date"),
    "TIME": LogicalType("time"),
    **{n: LogicalType("timestamp") for n in ("TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS",
                                             "DATETIME")},
    **{n: LogicalType("timestamptz") for n in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")},
    **{n: LogicalType("binary") for n in ("BLOB", "BYTEA")},
    "UUID": LogicalType("uuid"),
    "JSON": LogicalType("json"),
}


def logical_from_duckdb(data_type: str) -> LogicalType:
    """The logical type of a DuckDB column type as ``duckdb_columns().data_type`` spells it."""
    m = _DECLARED.match(data_type.strip().upper())
    if m is None:  # lists, structs, maps, unions, enums …: read as their text form
        return LogicalType("string")
    name = m["name"].strip()
    if name in ("DECIMAL", "NUMERIC"):
        p = int(m["p"]) if m["p"] else 18  # DuckDB's default DECIMAL is DECIMAL(18,3)
        return LogicalType("decimal", precision=p, scale=int(m["s"] or 0) if m["p"] else 3)
    return _BY_NAME.get(name, LogicalType("string"))


def duckdb_type(t: LogicalType) -> str:
    """The DuckDB type we create (and cast to when reading) for a logical type."""
    if t.kind == "decimal":
        if t.precision is None:
            return UNCONSTRAINED_DECIMAL
        if t.precision > _MAX_PRECISION:
            return "VARCHAR"  # exact digits; DuckDB decimals stop at 38
        return f"DECIMAL({t.precision},{t.scale or 0})"
    return {
        "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT", "float32": "REAL", "float64": "DOUBLE",
        "string": "VARCHAR", "bool": "BOOLEAN", "date": "DATE", "time": "TIME", "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ", "binary": "BLOB", "uuid": "UUID", "json": "JSON",
    }[t.kind]


def _read_type(t: LogicalType) -> str:
    """The SQL type a column is cast to when read, so Arrow gets the type ``arrow_type(t)`` asks for."""
    if t.kind in ("uuid", "json") or (t.kind == "decimal" and (t.precision or 0) > _MAX_PRECISION):
        return "VARCHAR"
    if t.kind == "decimal" and t.precision is None:
        return "VARCHAR"
    return duckdb_type(t)


def _table(table: TableName) -> TableName:
    return table if table.schema else TableName(table.name, DEFAULT_SCHEMA)


def _reflect(cur: duckdb.DuckDBPyConnection, table: TableName) -> TableSchema | None:
    # DuckDB identifiers are case-insensitive even when quoted: match names the same way
    t = _table(table)
    rows = cur.execute(
        "SELECT column_name, data_type, is_nullable FROM duckdb_columns() "
        "WHERE database_name = current_database() AND lower(schema_name) = lower(?) "
        "AND lower(table_name) = lower(?) ORDER BY column_index", [t.schema, t.name]).fetchall()
    if not rows:
        return None
    keys = cur.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
        "AND database_name = current_database() AND lower(schema_name) = lower(?) "
        "AND lower(table_name) = lower(?)", [t.schema, t.name]).fetchall()
    columns = tuple(Column(name=name, type=logical_from_duckdb(data_type), nullable=bool(nullable),
                           native_type=data_type) for name, data_type, nullable in rows)
    return TableSchema(table=table, columns=columns, primary_key=tuple(keys[0][0]) if keys else ())


def _translate(exc: duckdb.Error, what: str) -> ConnectorError:
    text = f"DuckDB: {what}: {exc}"
    if isinstance(exc, duckdb.CatalogException):
        return TableNotFound(text)
    if isinstance(exc, duckdb.TransactionException) and "constraint" in str(exc).lower():
        return DataError(text)  # a key violation found at COMMIT: retrying cannot help
    if isinstance(exc, duckdb.IOException | duckdb.TransactionException):
        return ConnectionFailed(text)  # file locked by another process, or a write-write conflict: retry
    if isinstance(exc, duckdb.ConstraintException | duckdb.ConversionException | duckdb.InvalidInputException):
        return DataError(text)
    return ConnectorError(text)


def _python_value(table: pa.Table, t: LogicalType) -> Any:
    return table.column(0).cast(arrow_type(t)).to_pylist()[0]


# ---------------------------------------------------------------- source


class DuckdbSource:
    capabilities = SourceCapabilities()

    def __init__(self, url: ConnectionUrl) -> None:
        self._url = url
        self._path = _database_path(url, create=False)
        self._cur = _SharedDatabase.acquire(self._path)
        self._closed = False

    def reflect(self, table: TableName) -> TableSchema:
        schema = _reflect(self._cur, table)
        if schema is None:
            raise TableNotFound(f"table {table} not found in DuckDB database {self._path}")
        return schema

    def table_names(self) -> list[TableName]:
        rows = self._cur.execute("SELECT table_schema, table_name FROM information_schema.tables "
                                 "WHERE table_schema NOT IN ('information_schema', 'pg_catalog')").fetchall()
        return [TableName(str(name), None if schema == "main" else str(schema)) for schema, name in rows]

    def estimate_rows(self, table: TableName) -> int | None:
        """DuckDB's own estimate of the table's size (exact for tables it wrote itself)."""
        row = self._catalog(table, "SELECT estimated_size FROM duckdb_tables()")
        return None if row[0][0] is None else int(row[0][0])

    def indexes(self, table: TableName) -> list[IndexInfo]:
        """Primary key and UNIQUE constraints (ART indexes made with CREATE INDEX are on expressions too and
        not described column by column: left out)."""
        rows = self._catalog(table, "SELECT constraint_type, constraint_name, constraint_column_names "
                                    "FROM duckdb_constraints()", require=False)
        return sorted((IndexInfo(str(name), tuple(columns), True, kind == "PRIMARY KEY")
                       for kind, name, columns in rows if kind in ("PRIMARY KEY", "UNIQUE")),
                      key=lambda i: not i.primary)

    def increasing_columns(self, table: TableName) -> tuple[str, ...]:
        rows = self._catalog(table, "SELECT column_name FROM duckdb_columns()", require=False,
                             where="AND column_default LIKE 'nextval(%' AND data_type IN "
                                   "('TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT')")
        return tuple(str(name) for (name,) in rows)

    def _catalog(self, table: TableName, select: str, *, require: bool = True,
                 where: str = "") -> list[tuple[Any, ...]]:
        """Rows of a catalog function about one table; TableNotFound when the table is not there."""
        if not require:
            self.reflect(table)  # raises TableNotFound: an empty answer must not hide a missing table
        t = _table(table)
        try:
            rows = self._cur.execute(f"{select} WHERE database_name = current_database() AND lower(schema_name) "
                                     f"= lower(?) AND lower(table_name) = lower(?) {where}",
                                     [t.schema, t.name]).fetchall()
        except duckdb.Error as exc:
            raise _translate(exc, str(table)) from exc
        if require and not rows:
            raise TableNotFound(f"table {table} not found in DuckDB database {self._path}")
        return rows

    def read(self, schema: TableSchema, filters: Sequence[RowFilter] = (),
             batch_rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        exprs = ", ".join(f"CAST({quote_double(c.name)} AS {_read_type(c.type)}) AS {quote_double(c.name)}"
                          for c in schema.columns)
        where, params = render_filters(filters, quote_double, placeholder="?")
        sql = f"SELECT {exprs} FROM {qualified(_table(schema.table), quote_double)}{where}"
        arrow_schema = schema.arrow_schema()
        cur = _cursor(self._cur)  # a streamed result blocks its connection: read on a cursor of our own
        reader: pa.RecordBatchReader | None = None
        try:
            try:
                reader = cur.sql(sql, params=_bind(params)).to_arrow_reader(batch_rows)
            except duckdb.Error as exc:
                raise _translate(exc, str(schema.table)) from exc
            for batch in reader:
                yield _conform(batch, arrow_schema)
        finally:
            reader = None  # destroy the open result before its cursor
            cur.close()

    def max_value(self, table: TableName, column: str) -> Any:
        return self._aggregate(table, column, "MAX")

    def count(self, table: TableName, filters: Sequence[RowFilter] = ()) -> int:
        where, params = render_filters(filters, quote_double, placeholder="?")
        sql = f"SELECT COUNT(*) FROM {qualified(_table(table), quote_double)}{where}"
        try:
            return int(self._cur.execute(sql, _bind(params)).fetchall()[0][0])
        except duckdb.Error as exc:
            raise _translate(exc, str(table)) from exc

    def key_range(self, table: TableName, column: str) -> tuple[Any, Any]:
        return self._aggregate(table, column, "MIN"), self._aggregate(table, column, "MAX")

    def copy_out_binary(self, schema: TableSchema, filters: Sequence[RowFilter] = ()) -> Iterator[bytes]:
        raise ConfigurationError("DuckDB cannot produce a PostgreSQL binary COPY stream")

    def clone(self) -> DuckdbSource:
        return DuckdbSource(self._url)

    def digests(self) -> RowDigests:
        """Row counts and hashes computed in the database (``copyjob verify``)."""
        from copyjob.connectors._digest_sql import duckdb_digests

        return duckdb_digests(self._cur)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cur.close()
            _SharedDatabase.release(self._path)

    def _aggregate(self, table: TableName, column: str, fn: str) -> Any:
        c = self.reflect(table).column(column)
        if c is None:
            raise ConfigurationError(f"column {column!r} not found in DuckDB table {table}")
        sql = (f"SELECT CAST({fn}({quote_double(column)}) AS {_read_type(c.type)}) "
               f"FROM {qualified(_table(table), quote_double)}")
        try:
            result = self._cur.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise _translate(exc, str(table)) from exc
        return _python_value(result, c.type)


def _bind(params: list[Any]) -> list[Any]:
    """Filter values as DuckDB binds them: naive datetimes are UTC, UUIDs as text."""
    return [str(v) if isinstance(v, uuid.UUID) else v for v in params]


# ---------------------------------------------------------------- destination

_STATE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {DEFAULT_SCHEMA}.{quote_double(STATE_TABLE)} ("
    '"job" VARCHAR NOT NULL, "table" VARCHAR NOT NULL, "run_id" VARCHAR NOT NULL, "state" VARCHAR NOT NULL, '
    '"committed_at" TIMESTAMPTZ NOT NULL, PRIMARY KEY ("job", "table"))'
)


def create_table_sql(schema: TableSchema, primary_key: Sequence[str]) -> str:
    parts = [f"{quote_double(c.name)} {duckdb_type(c.type)}"
             f"{' NOT NULL' if not c.nullable or c.name in primary_key else ''}" for c in schema.columns]
    if primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(quote_double(k) for k in primary_key)})")
    return f"CREATE TABLE {qualified(_table(schema.table), quote_double)} ({', '.join(parts)})"


class DuckdbDestination:
    capabilities = DestinationCapabilities(transactional=True, supports_merge=True, markers_alone=True)

    def __init__(self, url: ConnectionUrl) -> None:
        self._path = _database_path(url, create=True)
        new = str(self._path) != ":memory:" and not self._path.exists()
        self._cur = _SharedDatabase.acquire(self._path)
        if new:  # DuckDB made it with the default mode; its data is private (copyjob.core.private)
            restrict_created_file(self._path)
        self._closed = False

    def reflect(self, table: TableName) -> TableSchema | None:
        return _reflect(self._cur, table)

    def create_table(self, schema: TableSchema, *, primary_key: bool = True, key_index: bool = False) -> None:
        target = _table(schema.table)
        self._run(f"CREATE SCHEMA IF NOT EXISTS {quote_double(target.schema or DEFAULT_SCHEMA)}", target)
        self._run(create_table_sql(schema, schema.primary_key if primary_key else ()), target)
        if key_index and not primary_key and schema.primary_key:
            self._run(key_index_sql(target, schema.primary_key, quote_double), target)

    def add_columns(self, table: TableName, columns: Sequence[Column]) -> None:
        # added columns are nullable: the rows already there have no value for them
        for c in columns:
            self._run(f"ALTER TABLE {qualified(_table(table), quote_double)} ADD COLUMN {quote_double(c.name)} "
                      f"{duckdb_type(c.type)}", table)

    def drop_table(self, table: TableName) -> None:
        self._run(f"DROP TABLE IF EXISTS {qualified(_table(table), quote_double)}", table)

    def begin_load(self, schema: TableSchema, method: UpdateMethod, key: Sequence[str],
                   truncate: bool = False, deferred_key: Sequence[str] = ()) -> DuckdbLoadSession:
        check_load_key(schema, method, key)
        # created outside the load's transaction: parallel loads creating it would conflict at commit
        self._run(_STATE_DDL, TableName(STATE_TABLE))
        return DuckdbLoadSession(_cursor(self._cur), schema, method, key, truncate or method == "overwrite",
                                 deferred_key)

    def read_marker(self, job: str, table: str) -> StateMarker | None:
        exists = self._cur.execute(
            "SELECT 1 FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = ? "
            "AND table_name = ?", [DEFAULT_SCHEMA, STATE_TABLE]).fetchall()
        if not exists:
            return None
        rows = self._cur.execute(
            f'SELECT "run_id", "state" FROM {DEFAULT_SCHEMA}.{quote_double(STATE_TABLE)} '
            'WHERE "job" = ? AND "table" = ?', [job, table]).fetchall()
        return StateMarker(job=job, table=table, run_id=rows[0][0], state=json.loads(rows[0][1])) if rows else None

    def write_marker(self, marker: StateMarker) -> None:
        self._run(_STATE_DDL, TableName(STATE_TABLE))
        cur = _cursor(self._cur)
        try:
            _upsert_marker(cur, marker)  # no transaction open: the statement commits alone
        except duckdb.Error as exc:
            raise _translate(exc, STATE_TABLE) from exc
        finally:
            cur.close()

    def digests(self) -> RowDigests:
        """Row counts and hashes computed in the database (``copyjob verify``)."""
        from copyjob.connectors._digest_sql import duckdb_digests

        return duckdb_digests(self._cur)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cur.close()
            _SharedDatabase.release(self._path)

    def _run(self, sql: str, table: TableName) -> None:
        try:
            self._cur.execute(sql)
        except duckdb.Error as exc:
            raise _translate(exc, str(table)) from exc


class DuckdbLoadSession:
    """One load in one DuckDB transaction on a cursor of its own.

    Merge stages the batches in a TEMP table with a sequence number, and at commit deletes the rows whose key
    was staged and inserts the last staged row of each key.
    """

    _SEQ = "__copyjob_seq"

    def __init__(self, cur: duckdb.DuckDBPyConnection, schema: TableSchema, method: UpdateMethod,
                 key: Sequence[str], truncate: bool, deferred_key: Sequence[str]) -> None:
        self._cur, self._schema, self._key, self._deferred_key = cur, schema, tuple(key), tuple(deferred_key)
        self._append = method == "append"
        self._table = qualified(_table(schema.table), quote_double)
        self._columns = ", ".join(quote_double(c.name) for c in schema.columns)
        self._arrow_schema = pa.schema([_write_field(f) for f in schema.arrow_schema()])
        self._stage = quote_double(f"__copyjob_stage_{uuid.uuid4().hex[:12]}") if method == "merge" else None
        self._view = f"__copyjob_batch_{uuid.uuid4().hex[:12]}"
        self._rows = 0
        self._open = True
        try:
            cur.execute("BEGIN TRANSACTION")
            if truncate:
                cur.execute(f"DELETE FROM {self._table}")
            if self._stage:
                cur.execute(f"CREATE TEMP TABLE {self._stage} AS SELECT {self._columns}, "
                            f"CAST(NULL AS BIGINT) AS {quote_double(self._SEQ)} FROM {self._table} LIMIT 0")
        except duckdb.Error as exc:
            self.abort()
            raise _translate(exc, str(schema.table)) from exc

    def write(self, batch: pa.RecordBatch) -> int:
        batch = _conform(batch, self._arrow_schema)
        n = int(batch.num_rows)
        columns = self._columns
        if self._stage:
            batch = batch.append_column(self._SEQ, pa.array(range(self._rows, self._rows + n), pa.int64()))
            columns += f", {quote_double(self._SEQ)}"
        target = self._stage or self._table
        try:
            self._cur.register(self._view, batch)
            self._cur.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {quote_double(self._view)}")
        except duckdb.ConstraintException as exc:
            if self._append and "Duplicate key" in str(exc):
                raise duplicate_key_error(self._schema.table, f"DuckDB: {exc}") from exc
            raise _translate(exc, str(self._schema.table)) from exc
        except duckdb.Error as exc:
            raise _translate(exc, str(self._schema.table)) from exc
        finally:
            with contextlib.suppress(duckdb.Error):  # fails once the error aborted the transaction
                self._cur.unregister(self._view)
        self._rows += n
        return n

    def write_binary(self, chunks: Iterator[bytes]) -> int:
        raise ConfigurationError("DuckDB does not accept a PostgreSQL binary COPY stream")

    # ------------------------------------------------------------ deletes and column updates by key
    # Effects in call order (connectors/_keys.py): applied to the table now, inside the transaction, and in a
    # merge session to the rows staged so far, so a later ``write`` of a key wins at commit.

    def delete_keys(self, keys: pa.RecordBatch) -> int:
        """Delete the rows whose key equals a row of ``keys`` (key columns only); returns the table rows
        deleted. The Arrow batch is registered as a view and joined: ``DELETE … USING``."""
        key = self._match_key()
        check_delete_batch(keys, key, self._schema.table)
        live = without_null_keys(pa.Table.from_batches([keys]), key)  # a NULL key matches nothing
        if live.num_rows == 0:
            return 0
        match = " AND ".join(f"t.{quote_double(k)} = k.{quote_double(k)}" for k in key)
        view = quote_double(self._view)

        def run() -> int:
            if self._stage:
                self._cur.execute(f"DELETE FROM {self._stage} AS t USING {view} AS k WHERE {match}")
            return self._count(f"DELETE FROM {self._table} AS t USING {view} AS k WHERE {match}")

        return self._with_view(self._conformed(live, key), run)

    def update_columns(self, rows: pa.RecordBatch) -> int:
        """Set the non-key columns of ``rows`` on the rows with the same key (other columns untouched, keys not
        in the table ignored, the last row of a key in ``rows`` wins); returns the table rows updated.
        The Arrow batch is registered as a view: ``UPDATE … FROM``."""
        key = self._match_key()
        others = update_targets(rows, key, self._schema.column_names, self._schema.table)
        live = without_null_keys(last_per_key(rows, key), key)
        if live.num_rows == 0:
            return 0
        match = " AND ".join(f"t.{quote_double(k)} = u.{quote_double(k)}" for k in key)
        view = quote_double(self._view)
        sets = ", ".join(f"{quote_double(c)} = u.{quote_double(c)}" for c in others)

        def run() -> int:
            if not others:  # nothing to set: the rows that would have been updated
                return self._count(f"SELECT count(*) FROM {self._table} AS t "
                                   f"WHERE EXISTS (SELECT 1 FROM {view} AS u WHERE {match})")
            if self._stage:
                self._cur.execute(f"UPDATE {self._stage} AS t SET {sets} FROM {view} AS u WHERE {match}")
            return self._count(f"UPDATE {self._table} AS t SET {sets} FROM {view} AS u WHERE {match}")

        return self._with_view(self._conformed(live, [*key, *others]), run)

    def _match_key(self) -> tuple[str, ...]:
        """The load's key, else its deferred key, else the table's primary key."""
        if not self._open:
            raise ConnectorError(f"DuckDB: the load into {self._schema.table} is already committed or aborted")
        primary: tuple[str, ...] = ()
        if not (self._key or self._deferred_key):
            try:
                found = _reflect(self._cur, self._schema.table)
            except duckdb.Error as exc:
                raise _translate(exc, str(self._schema.table)) from exc
            primary = found.primary_key if found else ()
        key = match_key(self._schema.table, self._key, self._deferred_key, primary)
        unknown = [k for k in key if self._schema.column(k) is None]
        if unknown:
            raise ConfigurationError(f"key column(s) {unknown} of {self._schema.table} are not among the columns "
                                     "loaded")
        return key

    def _conformed(self, table: pa.Table, names: Sequence[str]) -> pa.RecordBatch:
        """The columns ``names`` in the types ``write`` sends them in."""
        schema = pa.schema([self._arrow_schema.field(n) for n in names])
        batch = table.select(list(names)).combine_chunks().to_batches()[0]
        return _conform(batch, schema)

    def _with_view(self, batch: pa.RecordBatch, run: Callable[[], int]) -> int:
        try:
            self._cur.register(self._view, batch)
            return run()
        except duckdb.Error as exc:
            raise _translate(exc, str(self._schema.table)) from exc
        finally:
            with contextlib.suppress(duckdb.Error):  # fails once the error aborted the transaction
                self._cur.unregister(self._view)

    def _count(self, sql: str) -> int:
        """Run a statement that answers with one count (DuckDB's DELETE and UPDATE do: the rows changed)."""
        row = self._cur.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def commit(self, marker: StateMarker | None) -> None:
        """1. apply staged merge rows; 2. add the deferred primary key; 3. upsert the marker; 4. COMMIT."""
        try:
            if self._stage:
                self._apply_merge(self._stage)
            if self._deferred_key:
                keys = ", ".join(quote_double(k) for k in self._deferred_key)
                self._cur.execute(f"ALTER TABLE {self._table} ADD PRIMARY KEY ({keys})")
            if marker is not None:
                self._write_marker(marker)
            self._cur.execute("COMMIT")
        except duckdb.Error as exc:
            self.abort()
            raise _translate(exc, str(self._schema.table)) from exc
        self._close()

    def abort(self) -> None:
        if self._open:
            with contextlib.suppress(duckdb.Error):  # no transaction open: BEGIN failed or COMMIT ended it
                self._cur.execute("ROLLBACK")
        self._close()

    def _apply_merge(self, stage: str) -> None:
        keys = ", ".join(quote_double(k) for k in self._key)
        self._cur.execute(f"DELETE FROM {self._table} WHERE ({keys}) IN (SELECT {keys} FROM {stage})")
        self._cur.execute(
            f"INSERT INTO {self._table} ({self._columns}) SELECT {self._columns} FROM {stage} "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {quote_double(self._SEQ)} DESC) = 1")
        self._cur.execute(f"DROP TABLE {stage}")

    def _write_marker(self, marker: StateMarker) -> None:
        _upsert_marker(self._cur, marker)

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._cur.close()


def _write_field(f: pa.Field) -> pa.Field:
    """DuckDB cannot scan Arrow decimal256: such columns (stored as VARCHAR) travel as text."""
    return f.with_type(pa.string()) if pa.types.is_decimal256(f.type) else f


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
