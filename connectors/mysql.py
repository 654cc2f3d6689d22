"""MySQL and MariaDB (schemes ``mysql://`` and ``mariadb://``), through pymysql.

- A :class:`~copyjob.core.schema.TableName`'s schema is the MySQL database; without one, the URL's database.
- Every session runs with ``time_zone='+00:00'`` (TIMESTAMP columns read and written in UTC) and a strict
  ``sql_mode`` (a value that does not fit raises instead of being clipped with a warning).
- Reading streams rows with an unbuffered cursor on a connection of its own and builds Arrow batches.
- Writing renders each Arrow batch into multi-row ``INSERT … VALUES`` statements column-wise with Arrow compute
  (no Python call per value) and keeps each statement under ``max_allowed_packet``.
- Type mappings both ways and their caveats: docs/types-mysql.md.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pymysql
import pymysql.cursors
from copyjob.connectors._append import duplicate_key_error, key_index_name
from copyjob.connectors._arrow import rows_to_batch
from copyjob.connectors._keys import check_delete_batch, last_per_key, match_key, update_targets, without_null_keys
from copyjob.connectors._sql import STATE_TABLE, quote_backtick, render_filters
from pymysql.connections import Connection
from pymysql.constants import FIELD_TYPE
from pymysql.converters import conversions, convert_date, convert_datetime

from copyjob.core import temporal
from copyjob.core.contracts import (
    DestinationCapabilities,
    IndexInfo,
    LoadSession,
    RowDigests,
    RowFilter,
    SourceCapabilities,
    StateMarker,
    UpdateMethod,
)
from copyjob.core.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionFailed,
    ConnectorError,
    CopyjobError,
    DataError,
    TableNotFound,
    TransactionConflict,
)
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema, arrow_type
from copyjob.core.urls import ConnectionUrl, redact
from copyjob.core.values import json_float

__all__ = ["MysqlDestination", "MysqlLoadSession", "MysqlSource", "connection_settings", "value_converter"]

# NO_AUTO_VALUE_ON_ZERO: a copied 0 in an AUTO_INCREMENT column stays 0 instead of taking the next value
_SQL_MODE = ("STRICT_ALL_TABLES,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,"
             "NO_AUTO_VALUE_ON_ZERO")
_INIT_COMMAND = f"SET time_zone = '+00:00', sql_mode = '{_SQL_MODE}'"
_PARAM = "\x00?\x00"  # placeholder that no identifier can contain (MySQL forbids NUL in names)

_AUTH_CODES = {1044, 1045, 1698}
_CONNECTION_CODES = {1040, 1053, 1077, 1079, 1129, 1927, 2002, 2003, 2005, 2006, 2013, 2055}  # 1053: shutting down
_RETRY_CODES = {1205, 1213}  # lock wait timeout, deadlock
_MISSING_CODES = {1049, 1146}
_DUPLICATE_KEY = 1062
_DATA_CODES = {1048, 1062, 1153, 1264, 1265, 1292, 1364, 1366, 1367, 1406, 1411, 1416, 1451, 1452, 1690,
               3140, 3819, 4025}


# ---------------------------------------------------------------- connections and errors


# Streaming reads leave dates and datetimes as text: Arrow parses a whole column much faster than pymysql
# builds one datetime object per value.
_TEXT_ON_WIRE = (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE, FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP)
_STREAM_CONVERSIONS = {k: v for k, v in conversions.items() if k not in _TEXT_ON_WIRE}


def connection_settings(url: ConnectionUrl) -> dict[str, Any]:
    """pymysql's connection arguments for ``url`` (also what change capture's binlog reader connects with)."""
    return dict(host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "",
                password=url.password or "", unix_socket=url.query.get("unix_socket"), charset="utf8mb4",
                connect_timeout=int(url.query.get("connect_timeout", "10")))


def connect(url: ConnectionUrl, *, streaming: bool = False, autocommit: bool = True) -> Connection[Any]:
    """A pymysql connection for ``url``; errors translated (AuthenticationFailed, ConnectionFailed, …)."""
    cursor = pymysql.cursors.SSCursor if streaming else pymysql.cursors.Cursor
    with translated_errors(url):
        return pymysql.connect(
            **connection_settings(url), database=url.database, autocommit=autocommit,
            init_command=_INIT_COMMAND, cursorclass=cursor, conv=_STREAM_CONVERSIONS if streaming else None,
        )


@contextmanager
def translated_errors(url: ConnectionUrl, table: TableName | None = None) -> Iterator[None]:
    try:
        yield
    except pymysql.err.MySQLError as exc:
        raise translate(exc, url, table) from exc


def _code_and_text(exc: pymysql.err.MySQLError) -> tuple[int, str]:
    args = exc.args
    code = args[0] if args and isinstance(args[0], int) else 0
    text = str(args[1]) if len(args) > 1 else str(exc)
    return code, redact(text)


def translate(exc: pymysql.err.MySQLError, url: ConnectionUrl, table: TableName | None) -> CopyjobError:
    code, text = _code_and_text(exc)
    where = f"{table} at {url.redacted}" if table else url.redacted
    if code in _AUTH_CODES:
        return AuthenticationFailed(f"{url.redacted}: {text}")
    if code in _CONNECTION_CODES or isinstance(exc, pymysql.err.InterfaceError):
        return ConnectionFailed(f"cannot reach {url.redacted}: {text or type(exc).__name__}")
    if code in _MISSING_CODES and table is not None:
        return TableNotFound(f"table {table} does not exist at {url.redacted} ({text})")
    if code in _RETRY_CODES:
        return TransactionConflict(f"{where}: {text}")
    if code in _DATA_CODES or isinstance(exc, pymysql.err.DataError | pymysql.err.IntegrityError):
        return DataError(f"{where}: {text}")
    return ConnectorError(f"{where}: {text}")


def _q(name: str) -> str:
    return quote_backtick(name)


def _table_sql(table: TableName) -> str:
    return f"{_q(table.schema)}.{_q(table.name)}" if table.schema else _q(table.name)


def _sql_param(value: Any) -> Any:
    """Aware datetimes become naive UTC: the session's time zone is UTC and DATETIME carries no zone."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _bind(conn: Connection[Any], sql: str, params: Sequence[Any]) -> str:
    """Replace each ``_PARAM`` with an escaped literal (no %-formatting: identifiers may contain ``%``)."""
    parts = sql.split(_PARAM)
    if len(parts) != len(params) + 1:
        raise AssertionError(f"{len(parts) - 1} placeholders for {len(params)} parameters")
    out = [parts[0]]
    for value, part in zip(params, parts[1:], strict=True):
        out.append(conn.escape(_sql_param(value)))
        out.append(part)
    return "".join(out)


def _query(conn: Connection[Any], sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(_bind(conn, sql, params))
        return list(cur.fetchall())


# ---------------------------------------------------------------- reflection: MySQL type -> logical type

_TEXT_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
_BINARY_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "bit", "geometry",
                 "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
                 "geometrycollection"}
_SIMPLE_TYPES: dict[str, LogicalType] = {
    "mediumint": LogicalType("int32"), "float": LogicalType("float32"), "double": LogicalType("float64"),
    "real": LogicalType("float64"), "date": LogicalType("date"), "time": LogicalType("time"),
    "datetime": LogicalType("timestamp"), "timestamp": LogicalType("timestamptz"),
    "year": LogicalType("int16"), "json": LogicalType("json"), "uuid": LogicalType("uuid"),
}


def _logical_type(data_type: str, column_type: str, precision: int | None, scale: int | None,
                  length: int | None) -> LogicalType:
    """The logical type of one information_schema.COLUMNS row (unsigned integers widen to fit)."""
    unsigned = "unsigned" in column_type
    if data_type == "tinyint":
        return LogicalType("bool" if column_type.startswith("tinyint(1)") else "int16")
    if data_type == "smallint":
        return LogicalType("int32" if unsigned else "int16")
    if data_type in ("int", "integer"):
        return LogicalType("int64" if unsigned else "int32")
    if data_type == "bigint":
        return LogicalType("decimal", precision=20, scale=0) if unsigned else LogicalType("int64")
    if data_type in ("decimal", "numeric"):
        return LogicalType("decimal", precision=precision or 10, scale=scale or 0)
    if data_type in ("char", "varchar"):
        return LogicalType("string", length=length)
    if data_type in _BINARY_TYPES:
        return LogicalType("binary")
    return _SIMPLE_TYPES.get(data_type, LogicalType("string"))


_COLUMNS_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE, "
    f"CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {_PARAM} "
    f"AND TABLE_NAME = {_PARAM} ORDER BY ORDINAL_POSITION"
)
_KEY_SQL = (
    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = "
    f"{_PARAM} AND TABLE_NAME = {_PARAM} AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION"
)
# MariaDB's JSON is LONGTEXT with a CHECK (json_valid(`col`)) constraint named after the column
_JSON_CHECKS_SQL = (
    "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
    f"WHERE CONSTRAINT_SCHEMA = {_PARAM} AND TABLE_NAME = {_PARAM}"
)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)


def _mariadb_json_columns(conn: Connection[Any], table: TableName) -> set[str]:
    if "mariadb" not in conn.get_server_info().lower():
        return set()
    rows = _query(conn, _JSON_CHECKS_SQL, (table.schema, table.name))
    return {_text(name) for name, clause in rows if _text(clause) == f"json_valid({_q(_text(name))})"}


def _reflect(conn: Connection[Any], table: TableName) -> TableSchema | None:
    rows = _query(conn, _COLUMNS_SQL, (table.schema, table.name))
    if not rows:
        return None
    json_columns = _mariadb_json_columns(conn, table)
    columns = []
    for name, data_type, column_type, nullable, precision, scale, length in rows:
        name, data_type, column_type = _text(name), _text(data_type).lower(), _text(column_type).lower()
        logical = _logical_type(data_type, column_type, precision, scale, length)
        if name in json_columns and data_type == "longtext":
            logical = LogicalType("json")
        columns.append(Column(name=name, type=logical, nullable=_text(nullable) == "YES",
                              native_type=column_type))
    key = tuple(_text(r[0]) for r in _query(conn, _KEY_SQL, (table.schema, table.name)))
    return TableSchema(table=table, columns=tuple(columns), primary_key=key)


# ---------------------------------------------------------------- reading: driver value -> Arrow value


def _to_time(value: Any) -> dt.time:
    """pymysql hands TIME out as timedelta (TIME spans -838h..838h); only a time of day fits."""
    if isinstance(value, dt.time):
        return value
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if not 0 <= micros < 86_400_000_000:
        raise ValueError(f"TIME value {value} is not a time of day (00:00:00 to 23:59:59.999999)")
    seconds, micro = divmod(micros, 1_000_000)
    return dt.time(seconds // 3600, seconds // 60 % 60, seconds % 60, micro)


def _date_or_none(value: Any) -> Any:
    """Zero dates ('0000-00-00') come back as text: they have no date value, so they read as NULL."""
    return value if isinstance(value, dt.date) else None


_TEMPORAL = ("date", "timestamp", "timestamptz")


def _converter(column: Column) -> Callable[[Any], Any] | None:
    kind = column.type.kind
    base = column.native_type.split("(")[0].split(" ")[0]
    if kind == "bool":
        return bool
    if kind == "time":
        return _to_time
    if kind in _TEMPORAL:
        return _date_or_none
    if kind == "decimal":
        return str if column.type.precision is None else decimal.Decimal
    if kind == "json" or (kind in ("string", "uuid") and base not in _TEXT_TYPES):
        return _text
    return None


def _select_expr(column: Column) -> str:
    """FLOAT comes over the text protocol with 6 digits only; as DOUBLE it keeps every bit of the float."""
    return f"({_q(column.name)} + 0e0)" if column.type.kind == "float32" else _q(column.name)


def _read_value(column: Column, value: Any) -> Any:
    """One value as :meth:`MysqlSource.read` would deliver it (aware UTC for timestamptz)."""
    conv = _converter(column)
    if value is None or conv is None:
        return value
    value = conv(value)
    if column.type.kind == "timestamptz" and value is not None:
        value = value.replace(tzinfo=dt.UTC)
    return value


def value_converter(column: Column) -> Callable[[Any], Any] | None:
    """How a driver value of ``column`` becomes its logical value, as :func:`_read_value` does it (None: as
    it is). Change capture converts binlog values with it."""
    conv = _converter(column)
    if conv is None or column.type.kind != "timestamptz":
        return conv

    def aware(value: Any) -> Any:
        value = conv(value)
        return value.replace(tzinfo=dt.UTC) if value is not None else None

    return aware


# ---------------------------------------------------------------- source


class MysqlSource:
    capabilities = SourceCapabilities()
    _pinned: Connection[Any] | None = None

    def __init__(self, url: ConnectionUrl) -> None:
        self._url = url
        self._conn = connect(url)

    @contextmanager
    def pinned(self) -> Iterator[Connection[Any]]:
        """Inside the block, :meth:`read` runs on one streaming connection (one read after the other), on which
        the caller may first open a transaction: change capture reads its snapshot in a consistent-snapshot
        transaction whose binlog position it knows. The transaction is rolled back at the end. ``clone`` (parallel
        reads) would leave it: read with one reader."""
        conn = connect(self._url, streaming=True)
        self._pinned = conn
        try:
            yield conn
        finally:
            self._pinned = None
            _close_quietly(conn)  # closing rolls the snapshot transaction back

    def _resolve(self, table: TableName) -> TableName:
        return _resolve(self._url, table)

    def reflect(self, table: TableName) -> TableSchema:
        table = self._resolve(table)
        with translated_errors(self._url, table):
            schema = _reflect(self._conn, table)
        if schema is None:
            raise TableNotFound(f"table {table} does not exist at {self._url.redacted}")
        return schema

    def table_names(self) -> list[TableName]:
        with translated_errors(self._url), self._conn.cursor() as cur:
            cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN "
                        "('mysql', 'information_schema', 'performance_schema', 'sys')")
            return [TableName(str(name), str(schema)) for schema, name in cur.fetchall()]

    def estimate_rows(self, table: TableName) -> int | None:
        """information_schema.TABLES.TABLE_ROWS: InnoDB's estimate (exact for MyISAM)."""
        rows = self._catalog(table, "SELECT TABLE_ROWS FROM information_schema.TABLES "
                                    f"WHERE TABLE_SCHEMA = {_PARAM} AND TABLE_NAME = {_PARAM}")
        return None if rows[0][0] is None else int(rows[0][0])

    def indexes(self, table: TableName) -> list[IndexInfo]:
        rows = self._catalog(table, "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS "
                                    f"WHERE TABLE_SCHEMA = {_PARAM} AND TABLE_NAME = {_PARAM} "
                                    "ORDER BY INDEX_NAME, SEQ_IN_INDEX")
        grouped: dict[str, tuple[bool, list[str | None]]] = {}
        for name, non_unique, column in rows:
            grouped.setdefault(_text(name), (not int(non_unique), []))[1].append(
                None if column is None else _text(column))
        found = [IndexInfo(name, tuple(c for c in cols if c), unique, name == "PRIMARY")
                 for name, (unique, cols) in grouped.items() if None not in cols]  # None: a functional part
        return sorted(found, key=lambda i: not i.primary)

    def increasing_columns(self, table: TableName) -> tuple[str, ...]:
        rows = self._catalog(table, "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                                    f"WHERE TABLE_SCHEMA = {_PARAM} AND TABLE_NAME = {_PARAM} "
                                    "AND EXTRA LIKE '%auto_increment%' ORDER BY ORDINAL_POSITION")
        return tuple(_text(r[0]) for r in rows)

    def _catalog(self, table: TableName, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a catalog query bound to (database, table); TableNotFound when the table is not there."""
        table = self._resolve(table)
        where = (table.schema, table.name)
        with translated_errors(self._url, table):
            if not _query(self._conn, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                          f"{_PARAM} AND TABLE_NAME = {_PARAM}", where):
                raise TableNotFound(f"table {table} does not exist at {self._url.redacted}")
            return _query(self._conn, sql, where)

    def read(self, schema: TableSchema, filters: Sequence[RowFilter] = (),
             batch_rows: int = 50_000) -> Generator[pa.RecordBatch, None, None]:
        table = self._resolve(schema.table)
        arrow_schema = schema.arrow_schema()
        converters = [None if c.type.kind in _TEMPORAL else _converter(c) for c in schema.columns]
        where, params = render_filters(filters, _q, placeholder=_PARAM)
        sql = f"SELECT {', '.join(_select_expr(c) for c in schema.columns)} FROM {_table_sql(table)}{where}"
        # a connection of its own: an unbuffered result blocks its connection until fully read
        pinned = self._pinned
        conn = pinned or connect(self._url, streaming=True)
        cur = conn.cursor()
        try:
            with translated_errors(self._url, table):
                cur.execute(_bind(conn, sql, params))
                while rows := cur.fetchmany(batch_rows):
                    yield _batch(rows, arrow_schema, converters, table)
        finally:
            _abandon(cur)
            if conn is not pinned:
                _close_quietly(conn)

    def max_value(self, table: TableName, column: str) -> Any:
        return self._aggregate(table, column, ("MAX",))[0]

    def key_range(self, table: TableName, column: str) -> tuple[Any, Any]:
        low, high = self._aggregate(table, column, ("MIN", "MAX"))
        return low, high

    def count(self, table: TableName, filters: Sequence[RowFilter] = ()) -> int:
        table = self._resolve(table)
        where, params = render_filters(filters, _q, placeholder=_PARAM)
        with translated_errors(self._url, table):
            rows = _query(self._conn, f"SELECT COUNT(*) FROM {_table_sql(table)}{where}", params)
        return int(rows[0][0])

    def copy_out_binary(self, schema: TableSchema, filters: Sequence[RowFilter] = ()) -> Iterator[bytes]:
        raise ConfigurationError("MySQL cannot produce a PostgreSQL binary COPY stream")

    def clone(self) -> MysqlSource:
        return MysqlSource(self._url)

    def digests(self) -> RowDigests:
        """Row counts and hashes computed in the database (``copyjob verify``)."""
        from copyjob.connectors._digest_sql import mysql_digests

        return mysql_digests(lambda sql, params: _query(self._conn, sql, params), _PARAM)

    def close(self) -> None:
        _close_quietly(self._conn)

    def _aggregate(self, table: TableName, column: str, functions: Sequence[str]) -> tuple[Any, ...]:
        """Aggregates of one column, converted like :meth:`read` converts that column's values."""
        schema = self.reflect(table)
        col = schema.column(column)
        if col is None:
            raise ConfigurationError(f"table {schema.table} has no column {column!r}")
        select = ", ".join(f"{f}({_select_expr(col)})" for f in functions)
        with translated_errors(self._url, schema.table):
            row = _query(self._conn, f"SELECT {select} FROM {_table_sql(schema.table)}")[0]
        return tuple(_read_value(col, v) for v in row)


def _resolve(url: ConnectionUrl, table: TableName) -> TableName:
    """A table with its database: its own schema, else the URL's database."""
    if table.schema:
        return table
    if not url.database:
        raise ConfigurationError(f"table {table.name!r} names no database and {url.redacted} has none")
    return TableName(name=table.name, schema=url.database)


def _batch(rows: Sequence[Sequence[Any]], schema: pa.Schema,
           converters: Sequence[Callable[[Any], Any] | None], table: TableName) -> pa.RecordBatch:
    """Rows of a streaming read (temporal values still text) as one batch with ``schema``."""
    temporal = [i for i, f in enumerate(schema) if pa.types.is_temporal(f.type) and not pa.types.is_time(f.type)]
    wire = schema
    for i in temporal:
        wire = wire.set(i, schema.field(i).with_type(pa.string()))
    try:
        batch = rows_to_batch(rows, wire, converters)
        columns = list(batch.columns)
        for i in temporal:
            columns[i] = _parse_temporal(columns[i], schema.field(i).type)
        return pa.RecordBatch.from_arrays(columns, schema=schema)
    except (ValueError, TypeError) as exc:  # includes pyarrow's ArrowInvalid and ArrowTypeError
        raise DataError(f"{table}: a value cannot be read: {exc}") from exc


def _parse_temporal(text: pa.Array, target: pa.DataType) -> pa.Array:
    """MySQL's date/datetime text as Arrow; per value only when a zero date ('0000-00-00') is present."""
    naive = pa.timestamp("us") if pa.types.is_timestamp(target) else target
    try:
        parsed = text.cast(naive)
    except pa.ArrowInvalid:
        parse = convert_date if pa.types.is_date(target) else convert_datetime
        parsed = pa.array([None if v is None else _date_or_none(parse(v)) for v in text.to_pylist()], naive)
    return parsed.cast(target)  # naive -> UTC keeps the wall time, which the session zone made UTC


def _abandon(cur: Any) -> None:
    """Forget an unbuffered result without reading it: ``cursor.close()`` would read every remaining row of
    an abandoned stream, and pymysql's result finaliser would try to read from the closed connection."""
    result = getattr(cur, "_result", None)
    if result is not None:
        result.unbuffered_active = False


def _close_quietly(conn: Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:  # already closed or broken: nothing left to release
        pass


# ---------------------------------------------------------------- DDL: logical type -> MySQL type

_MAX_VARCHAR = 16_383  # 65,535 bytes / 4 bytes per utf8mb4 character
_ROW_BUDGET = 60_000  # InnoDB's 65,535-byte row limit counts every VARCHAR at its maximum byte length
_DDL_TYPES = {
    "int16": "SMALLINT", "int32": "INT", "int64": "BIGINT", "float32": "FLOAT", "float64": "DOUBLE",
    "bool": "BOOLEAN", "date": "DATE", "time": "TIME(6)", "timestamp": "DATETIME(6)",
    "timestamptz": "DATETIME(6)", "uuid": "CHAR(36)", "json": "JSON",
}
_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"


def _decimal_ddl(t: LogicalType) -> str:
    if t.precision is None:
        return "DECIMAL(65,30)"
    scale = min(t.scale or 0, 30)
    return f"DECIMAL({min(t.precision, 65)},{scale})"


def _column_type_ddl(t: LogicalType, in_key: bool, budget: list[int]) -> str:
    """MySQL type for a logical type; ``budget`` is the row bytes still free for VARCHARs (updated)."""
    if t.kind == "decimal":
        return _decimal_ddl(t)
    if t.kind == "binary":
        return "VARBINARY(255)" if in_key else "LONGBLOB"
    if t.kind == "string":
        length = t.length or (255 if in_key else None)
        if length and length <= _MAX_VARCHAR and (in_key or 4 * length + 2 <= budget[0]):
            budget[0] -= 4 * length + 2
            return f"VARCHAR({length})"
        return "LONGTEXT"
    return _DDL_TYPES[t.kind]


def _columns_ddl(columns: Sequence[Column], key: Sequence[str]) -> list[str]:
    budget = [_ROW_BUDGET]
    # key columns first, so that they get their VARCHAR before the row budget runs out
    ordered = sorted(columns, key=lambda c: c.name not in key)
    types = {c.name: _column_type_ddl(c.type, c.name in key, budget) for c in ordered}
    return [f"{_q(c.name)} {types[c.name]}{'' if c.nullable and c.name not in key else ' NOT NULL'}"
            for c in columns]


# ---------------------------------------------------------------- writing: Arrow batch -> SQL literals


def _escape_text(text: pa.Array) -> pa.Array:
    """Quote a string array as MySQL literals (the session's sql_mode keeps backslash escapes on)."""
    for old, new in (("\\", "\\\\"), ("'", "\\'"), ("\x00", "\\0")):
        text = pc.replace_substring(text, old, new)
    return pc.binary_join_element_wise("'", text, "'", "")


def _literals(array: pa.Array, column: Column) -> pa.Array:
    """One column as SQL literal text, NULL for nulls; vectorised with Arrow compute."""
    kind = column.type.kind
    target = arrow_type(column.type)
    # any integer renders the same; MySQL then judges the range and names column and row
    if array.type != target and not (pa.types.is_integer(array.type) and pa.types.is_integer(target)):
        try:
            array = array.cast(target)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"column {column.name!r} does not fit {column.type}: {exc}") from exc
    if kind == "timestamptz":
        array = array.cast(pa.timestamp("us"))  # same instant, naive UTC wall time
    if kind in ("float32", "float64") and pc.any(pc.invert(pc.is_finite(array))).as_py():
        row = pc.index(pc.invert(pc.is_finite(array)), True).as_py()
        raise ValueError(f"column {column.name!r} holds {json_float(array[row].as_py())} (row {row + 1} of the batch), "
                         f"which MySQL cannot store")
    special = temporal.beyond_python(array) if kind in ("date", "timestamp", "timestamptz") else None
    if special is not None:
        row = pc.index(special, True).as_py()
        value = temporal.pg_text(temporal.kind_of(array), temporal.integers(array)[row] or 0)
        raise ValueError(f"column {column.name!r} holds {value} (row {row + 1} of the batch), which MySQL "
                         f"cannot store (DATE and DATETIME hold the years 1000 to 9999, and no infinity)")
    if kind == "time":  # MySQL's TIME holds 24:00:00 (PostgreSQL's spelling is MySQL's)
        text = _escape_text(temporal.as_pg_text(array))
    elif kind == "binary":
        text = pa.array([None if b is None else f"X'{b.hex()}'" for b in array.to_pylist()], pa.string())
    elif kind == "float32":  # the float's exact value: its shortest float32 text can exceed MySQL's FLOAT max
        text = array.cast(pa.float64()).cast(pa.string())
    elif kind in ("int16", "int32", "int64", "float64", "bool"):
        text = array.cast(pa.string())
    else:
        text = _escape_text(array.cast(pa.string()))
    return pc.fill_null(text, "NULL")


def _row_literals(batch: pa.RecordBatch, columns: Sequence[Column]) -> pa.Array:
    """``(v1,v2,…)`` per row."""
    # large_string: a big batch of wide rows may pass the 2 GiB that 32-bit string offsets can address
    cols = [_literals(batch.column(c.name), c).cast(pa.large_string()) for c in columns]
    comma, open_, close, empty = (pa.scalar(t, pa.large_string()) for t in (",", "(", ")", ""))
    joined = pc.binary_join_element_wise(*cols, comma) if len(cols) > 1 else cols[0]
    return pc.binary_join_element_wise(open_, joined, close, empty)


# ---------------------------------------------------------------- destination


class MysqlDestination:
    capabilities = DestinationCapabilities(transactional=True, supports_merge=True, postgres_binary=False,
                                           preferred_batch_rows=20_000, markers_alone=True)

    def __init__(self, url: ConnectionUrl) -> None:
        self._url = url
        self._conn = connect(url)

    def reflect(self, table: TableName) -> TableSchema | None:
        table = _resolve(self._url, table)
        with translated_errors(self._url, table):
            return _reflect(self._conn, table)

    def create_table(self, schema: TableSchema, *, primary_key: bool = True, key_index: bool = False) -> None:
        table = _resolve(self._url, schema.table)
        # key columns get key-able types even when the key itself is added later (deferred_key)
        lines = _columns_ddl(schema.columns, schema.primary_key)
        if primary_key and schema.primary_key:
            lines.append(f"PRIMARY KEY ({', '.join(_q(k) for k in schema.primary_key)})")
        elif key_index and schema.primary_key:
            lines.append(f"KEY {_q(key_index_name(table))} ({', '.join(_q(k) for k in schema.primary_key)})")
        body = ",\n  ".join(lines)
        with translated_errors(self._url, table), self._conn.cursor() as cur:
            if schema.table.schema:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {_q(table.schema or '')} CHARACTER SET utf8mb4")
            cur.execute(f"CREATE TABLE {_table_sql(table)} (\n  {body}\n) {_TABLE_OPTIONS}")

    def add_columns(self, table: TableName, columns: Sequence[Column]) -> None:
        """Add columns, always nullable: the rows already there have no value for them."""
        if not columns:
            return
        table = _resolve(self._url, table)
        budget = [_ROW_BUDGET]
        adds = ", ".join(f"ADD COLUMN {_q(c.name)} {_column_type_ddl(c.type, False, budget)} NULL"
                         for c in columns)
        with translated_errors(self._url, table), self._conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {_table_sql(table)} {adds}")

    def drop_table(self, table: TableName) -> None:
        table = _resolve(self._url, table)
        with translated_errors(self._url, table), self._conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {_table_sql(table)}")

    def begin_load(self, schema: TableSchema, method: UpdateMethod, key: Sequence[str],
                   truncate: bool = False, deferred_key: Sequence[str] = ()) -> LoadSession:
        schema = TableSchema(table=_resolve(self._url, schema.table), columns=schema.columns,
                             primary_key=schema.primary_key)
        return MysqlLoadSession(self._url, schema, method, tuple(key), truncate=truncate,
                                deferred_key=tuple(deferred_key))

    def read_marker(self, job: str, table: str) -> StateMarker | None:
        state_table = _state_table(self._url)
        sql = (f"SELECT run_id, state FROM {_table_sql(state_table)} "
               f"WHERE job = {_PARAM} AND table_name = {_PARAM}")
        try:
            with translated_errors(self._url, state_table):
                rows = _query(self._conn, sql, (job, table))
        except TableNotFound:
            return None
        if not rows:
            return None
        return StateMarker(job=job, table=table, run_id=_text(rows[0][0]), state=json.loads(rows[0][1]))

    def write_marker(self, marker: StateMarker) -> None:
        state_table = _state_table(self._url)
        state = json.dumps(marker.state, sort_keys=True)
        # the destination's connection autocommits: each statement is its own transaction
        with translated_errors(self._url, state_table), self._conn.cursor() as cur:
            cur.execute(_STATE_DDL.format(table=_table_sql(state_table)))
            cur.execute(_bind(self._conn, _STATE_UPSERT.format(table=_table_sql(state_table)),
                              (marker.job, marker.table, marker.run_id, state)))

    def digests(self) -> RowDigests:
        """Row counts and hashes computed in the database (``copyjob verify``)."""
        from copyjob.connectors._digest_sql import mysql_digests

        return mysql_digests(lambda sql, params: _query(self._conn, sql, params), _PARAM)

    def close(self) -> None:
        _close_quietly(self._conn)


def _state_table(url: ConnectionUrl) -> TableName:
    if not url.database:
        raise ConfigurationError(f"{url.redacted} names no database to hold {STATE_TABLE}")
    return TableName(name=STATE_TABLE, schema=url.database)


_STATE_DDL = (
    "CREATE TABLE IF NOT EXISTS {table} (job VARCHAR(255) NOT NULL, table_name VARCHAR(255) NOT NULL, "
    "run_id VARCHAR(64) NOT NULL, state LONGTEXT NOT NULL, committed_at DATETIME(6) NOT NULL, "
    f"PRIMARY KEY (job, table_name)) {_TABLE_OPTIONS}"
)
_STATE_UPSERT = (
    "INSERT INTO {table} (job, table_name, run_id, state, committed_at) "
    f"VALUES ({_PARAM}, {_PARAM}, {_PARAM}, {_PARAM}, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE "
    "run_id = VALUES(run_id), state = VALUES(state), committed_at = VALUES(committed_at)"
)
_SEQ = "_copyjob_seq"
_ROW_IN_MESSAGE = re.compile(r"at row (\d+)")  # MySQL counts rows within the failing statement


class MysqlLoadSession:
    """One load into one table on a connection of its own.

    MySQL commits implicitly before any DDL, so every DDL happens before the data transaction opens:
    1. create ``_copyjob_state`` when missing; add a deferred primary key now, while the table is empty
       (InnoDB stores rows in key order, so loading with the key is the fast path anyway, and duplicate keys
       then fail the load instead of surfacing after the data committed); create merge staging tables.
    2. ``START TRANSACTION``; overwrite/truncate ``DELETE`` the rows (TRUNCATE would commit).
    3. ``write`` inserts batches into the table, or for merge into a temporary staging table;
       ``delete_keys``/``update_columns`` change the table (and the merge staging) by key at once, in call
       order, through a temporary table of the keys (``DELETE … JOIN``, ``UPDATE … JOIN``).
    4. ``commit``: merge deletes the target rows whose key was staged and inserts the last staged row per
       key; then the state marker is upserted and data and marker commit together.
    """

    def __init__(self, url: ConnectionUrl, schema: TableSchema, method: UpdateMethod, key: tuple[str, ...],
                 *, truncate: bool, deferred_key: tuple[str, ...]) -> None:
        _check_key(schema, method, key)
        self._url = url
        self._schema = schema
        self._table = schema.table
        self._method = method
        self._key = key or schema.primary_key
        self._deferred_key = deferred_key
        self._rows = 0
        self._conn = connect(url, autocommit=False)
        self._open = True
        try:
            with translated_errors(url, self._table):
                self._prepare(deferred_key)
                self._conn.begin()
                if truncate or method == "overwrite":
                    self._execute(f"DELETE FROM {_table_sql(self._table)}")
        except BaseException:
            self._close()
            raise

    # ---- step 1: DDL before the transaction

    def _prepare(self, deferred_key: tuple[str, ...]) -> None:
        self._execute(_STATE_DDL.format(table=_table_sql(_state_table(self._url))))
        (packet,) = _query(self._conn, "SELECT @@max_allowed_packet")[0]
        self._max_packet = int(packet)
        if deferred_key and not _query(self._conn, _KEY_SQL, (self._table.schema, self._table.name)):
            cols = ", ".join(_q(k) for k in deferred_key)
            self._execute(f"ALTER TABLE {_table_sql(self._table)} ADD PRIMARY KEY ({cols})")
        self._insert_into = self._table
        if self._method == "merge":
            self._create_staging()

    def _create_staging(self) -> None:
        suffix = uuid.uuid4().hex[:12]
        self._stage = TableName(f"_copyjob_stage_{suffix}", self._table.schema)
        self._last = TableName(f"_copyjob_last_{suffix}", self._table.schema)
        cols = ", ".join(_q(c) for c in self._schema.column_names)
        # CREATE … SELECT copies the target's column types; TEMPORARY DDL does not commit
        self._execute(f"CREATE TEMPORARY TABLE {_table_sql(self._stage)} "
                      f"({_q(_SEQ)} BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB "
                      f"SELECT {cols} FROM {_table_sql(self._table)} LIMIT 0")
        self._execute(f"CREATE TEMPORARY TABLE {_table_sql(self._last)} "
                      f"({_q(_SEQ)} BIGINT NOT NULL PRIMARY KEY) ENGINE=InnoDB")
        self._insert_into = self._stage

    # ---- step 3: writes

    def write(self, batch: pa.RecordBatch) -> int:
        if batch.num_rows == 0:
            return 0
        try:
            rows = _row_literals(batch, self._schema.columns)
        except ValueError as exc:  # includes pyarrow's ArrowInvalid
            raise DataError(f"{self._table}: {exc}") from exc
        prefix = (f"INSERT INTO {_table_sql(self._insert_into)} "
                  f"({', '.join(_q(c) for c in self._schema.column_names)}) VALUES ")
        sizes = pc.binary_length(rows).to_pylist()
        texts = rows.to_pylist()
        limit = min(self._max_packet - 1024, 4 << 20) - len(prefix.encode())
        start, size = 0, 0
        for i, n in enumerate(sizes):
            if n > limit:
                raise DataError(f"{self._table}: {self._where(batch, i)} is {n} bytes as SQL, larger than "
                                f"max_allowed_packet ({self._max_packet})")
            if size + n + 1 > limit:
                self._insert(prefix, texts, start, i, batch)
                start, size = i, 0
            size += n + 1
        self._insert(prefix, texts, start, len(texts), batch)
        self._rows += batch.num_rows
        return batch.num_rows

    def _insert(self, prefix: str, texts: list[str], start: int, end: int, batch: pa.RecordBatch) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.execute(prefix + ",".join(texts[start:end]))
        except pymysql.err.MySQLError as exc:
            code, text = _code_and_text(exc)
            if code == _DUPLICATE_KEY and self._method == "append":
                raise duplicate_key_error(self._table, f"MySQL: {text}", self._key) from exc
            found = _ROW_IN_MESSAGE.search(text)
            if code in _DATA_CODES and found:
                row = start + int(found.group(1)) - 1
                raise DataError(f"{self._table}: {text} ({self._where(batch, row)})") from exc
            raise translate(exc, self._url, self._table) from exc

    def _where(self, batch: pa.RecordBatch, row: int) -> str:
        """``row N of this load`` and the row's key values when the key is known."""
        keys = ", ".join(f"{k}={batch.column(k)[row].as_py()!r}" for k in self._key
                         if k in batch.schema.names)
        return f"row {self._rows + row + 1} of this load" + (f", {keys}" if keys else "")

    def write_binary(self, chunks: Iterator[bytes]) -> int:
        raise ConfigurationError("MySQL does not accept PostgreSQL binary COPY data")

    # ---- step 3b: deletes and column updates by key (effects in call order, see connectors/_keys.py)

    def delete_keys(self, keys: pa.RecordBatch) -> int:
        """Delete the rows whose key equals a row of ``keys`` (key columns only), now, inside the transaction;
        in a merge session also the rows of those keys staged so far, so a later ``write`` of a key wins.
        Returns the table rows deleted."""
        key = self._match_key()
        check_delete_batch(keys, key, self._table)
        live = without_null_keys(pa.Table.from_batches([keys]), key)  # a NULL key matches nothing
        if live.num_rows == 0:
            return 0
        with translated_errors(self._url, self._table):
            temp = self._stage_columns(live, key)
            match = " AND ".join(f"t.{_q(k)} = k.{_q(k)}" for k in key)
            if self._method == "merge":
                self._execute(f"DELETE t FROM {_table_sql(self._stage)} AS t JOIN {temp} AS k ON {match}")
            with self._conn.cursor() as cur:
                deleted = int(cur.execute(f"DELETE t FROM {_table_sql(self._table)} AS t JOIN {temp} AS k "
                                          f"ON {match}"))
            self._execute(f"DROP TEMPORARY TABLE {temp}")
        return deleted

    def update_columns(self, rows: pa.RecordBatch) -> int:
        """Set the non-key columns of ``rows`` on the rows with the same key (other columns untouched, keys not
        in the table ignored, the last row of a key in ``rows`` wins), now, inside the transaction; in a merge
        session also on the rows of those keys staged so far. Returns the table rows matched."""
        key = self._match_key()
        others = update_targets(rows, key, self._schema.column_names, self._table)
        live = without_null_keys(last_per_key(rows, key), key)
        if live.num_rows == 0:
            return 0
        with translated_errors(self._url, self._table):
            temp = self._stage_columns(live, (*key, *others))
            match = " AND ".join(f"t.{_q(k)} = u.{_q(k)}" for k in key)
            # MySQL reports changed rows, not matched ones: count the matches
            (found,) = _query(self._conn, f"SELECT COUNT(*) FROM {_table_sql(self._table)} AS t "
                                          f"WHERE EXISTS (SELECT 1 FROM {temp} AS u WHERE {match})")[0]
            if others:
                sets = ", ".join(f"t.{_q(c)} = u.{_q(c)}" for c in others)
                if self._method == "merge":
                    self._execute(f"UPDATE {_table_sql(self._stage)} AS t JOIN {temp} AS u ON {match} SET {sets}")
                self._execute(f"UPDATE {_table_sql(self._table)} AS t JOIN {temp} AS u ON {match} SET {sets}")
            self._execute(f"DROP TEMPORARY TABLE {temp}")
        return int(found)

    def _match_key(self) -> tuple[str, ...]:
        """The load's key (or the schema's primary key), else its deferred key, else the table's primary key."""
        if not self._open:
            raise ConnectorError(f"load into {self._table} is already finished")
        primary: tuple[str, ...] = ()
        if not (self._key or self._deferred_key):
            with translated_errors(self._url, self._table):
                primary = tuple(_text(r[0]) for r in _query(self._conn, _KEY_SQL,
                                                             (self._table.schema, self._table.name)))
        key = match_key(self._table, self._key, self._deferred_key, primary)
        unknown = [k for k in key if self._schema.column(k) is None]
        if unknown:
            raise ConfigurationError(f"key column(s) {unknown} of {self._table} are not among the columns loaded")
        return key

    def _stage_columns(self, rows: pa.Table, names: Sequence[str]) -> str:
        """Insert the columns ``names`` of ``rows`` into a new temporary table with the target's column types
        (temporary DDL does not commit); returns its quoted name."""
        temp = _table_sql(TableName(f"_copyjob_rows_{uuid.uuid4().hex[:12]}", self._table.schema))
        cols = ", ".join(_q(n) for n in names)
        self._execute(f"CREATE TEMPORARY TABLE {temp} ENGINE=InnoDB SELECT {cols} FROM {_table_sql(self._table)} "
                      "LIMIT 0")
        columns = [c for n in names if (c := self._schema.column(n)) is not None]
        prefix = f"INSERT INTO {temp} ({cols}) VALUES "
        limit = min(self._max_packet - 1024, 4 << 20) - len(prefix.encode())
        for batch in rows.select(list(names)).to_batches():
            if batch.num_rows == 0:
                continue
            try:
                literals = _row_literals(batch, columns)
            except ValueError as exc:  # includes pyarrow's ArrowInvalid
                raise DataError(f"{self._table}: {exc}") from exc
            texts, sizes = literals.to_pylist(), pc.binary_length(literals).to_pylist()
            start, size = 0, 0
            for i, n in enumerate(sizes):
                if n > limit:
                    raise DataError(f"{self._table}: a row is {n} bytes as SQL, larger than max_allowed_packet "
                                    f"({self._max_packet})")
                if size + n + 1 > limit and i > start:
                    self._execute(prefix + ",".join(texts[start:i]))
                    start, size = i, 0
                size += n + 1
            self._execute(prefix + ",".join(texts[start:]))
        return temp

    # ---- step 4: commit

    def commit(self, marker: StateMarker | None) -> None:
        if not self._open:
            raise ConnectorError(f"load into {self._table} is already finished")
        try:
            with translated_errors(self._url, self._table):
                if self._method == "merge":
                    self._merge_staged()
                if marker is not None:
                    self._write_marker(marker)
                self._conn.commit()
        except BaseException:
            self.abort()
            raise
        self._close()

    def _merge_staged(self) -> None:
        target, stage, last = (_table_sql(t) for t in (self._table, self._stage, self._last))
        keys = ", ".join(_q(k) for k in self._key)
        cols = ", ".join(f"s.{_q(c)}" for c in self._schema.column_names)
        match = " AND ".join(f"t.{_q(k)} <=> s.{_q(k)}" for k in self._key)
        # a temporary table may appear only once per statement in MySQL, hence the second table
        self._execute(f"INSERT INTO {last} ({_q(_SEQ)}) SELECT MAX({_q(_SEQ)}) FROM {stage} GROUP BY {keys}")
        self._execute(f"DELETE t FROM {target} AS t JOIN {stage} AS s ON {match}")
        self._execute(f"INSERT INTO {target} ({', '.join(_q(c) for c in self._schema.column_names)}) "
                      f"SELECT {cols} FROM {stage} AS s JOIN {last} AS l ON l.{_q(_SEQ)} = s.{_q(_SEQ)} "
                      f"ORDER BY s.{_q(_SEQ)}")

    def _write_marker(self, marker: StateMarker) -> None:
        sql = _STATE_UPSERT.format(table=_table_sql(_state_table(self._url)))
        state = json.dumps(marker.state, sort_keys=True)
        with self._conn.cursor() as cur:
            cur.execute(_bind(self._conn, sql, (marker.job, marker.table, marker.run_id, state)))

    def abort(self) -> None:
        if not self._open:
            return
        try:
            self._conn.rollback()
        except pymysql.err.MySQLError:
            pass  # a broken connection rolls back on the server when it closes
        self._close()

    def _close(self) -> None:
        self._open = False
        _close_quietly(self._conn)  # temporary staging tables go with the connection

    def _execute(self, sql: str) -> None:
        with self._conn.cursor() as cur:
            cur.execute(sql)


def _check_key(schema: TableSchema, method: UpdateMethod, key: Sequence[str]) -> None:
    if method not in ("append", "overwrite", "merge"):
        raise ConfigurationError(f"unknown update method {method!r}")
    if method == "merge" and not (key or schema.primary_key):
        raise ConfigurationError(f"merge into {schema.table} needs a key")
    missing = [k for k in key if schema.column(k) is None]
    if missing:
        raise ConfigurationError(f"key column(s) {', '.join(missing)} not among the columns of {schema.table}")
