"""Reading PostgreSQL tables: binary COPY of a filtered SELECT, batched into Arrow record batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from copyjob.connectors._sql import qualified, quote_double, render_filters
from copyjob.connectors.postgres import _catalog
from copyjob.connectors.postgres._connect import connect, translate
from copyjob.connectors.postgres._copy_out import copy_out_chunks
from psycopg import sql

from copyjob.core.contracts import IndexInfo, RowDigests, RowFilter, SourceCapabilities
from copyjob.core.errors import TableNotFound
from copyjob.core.schema import TableName, TableSchema
from copyjob.core.urls import ConnectionUrl

if TYPE_CHECKING:  # Arrow is imported when rows are decoded: the binary pass-through never needs it
    import pyarrow as pa

T = TypeVar("T")


class PostgresSource:
    """A PostgreSQL source. One autocommit connection; a running ``read`` owns it until exhausted, so use
    :meth:`clone` for parallel readers."""

    capabilities = SourceCapabilities(postgres_binary=True)

    def __init__(self, url: ConnectionUrl, snapshot: str | None = None) -> None:
        self._url = url
        self._snapshot = snapshot
        self._conn = connect(url, autocommit=True)
        if snapshot is not None:
            self._pin(snapshot)

    def _pin(self, snapshot: str) -> None:
        """Read everything inside one REPEATABLE READ transaction that uses an exported snapshot (change
        capture's gap-free handoff: every clone sees exactly the same data)."""
        try:
            # autocommit connection, explicit BEGIN: the reads below all run in this one transaction
            self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self._conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        except psycopg.Error as exc:
            self._conn.close()
            raise translate(exc, self._url) from exc

    # ------------------------------------------------------------ catalog

    def reflect(self, table: TableName) -> TableSchema:
        try:
            schema = _catalog.reflect(self._conn, table)
        except psycopg.Error as exc:
            raise translate(exc, self._url, table) from exc
        if schema is None:
            raise TableNotFound(f"table {_catalog.with_schema(table)} does not exist on {self._url.redacted}")
        return schema

    def table_names(self) -> list[TableName]:
        try:
            rows = self._conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
        except psycopg.Error as exc:
            raise translate(exc, self._url) from exc
        return [TableName(name, schema) for schema, name in rows]

    def estimate_rows(self, table: TableName) -> int | None:
        return self._catalog(table, _catalog.estimate_rows)

    def indexes(self, table: TableName) -> list[IndexInfo]:
        return self._catalog(table, _catalog.indexes)

    def increasing_columns(self, table: TableName) -> tuple[str, ...]:
        return self._catalog(table, _catalog.increasing_columns)

    def _catalog(self, table: TableName, query: Callable[[psycopg.Connection[Any], TableName], T]) -> T:
        try:
            return query(self._conn, table)
        except psycopg.errors.UndefinedTable as exc:
            raise TableNotFound(f"table {_catalog.with_schema(table)} does not exist on {self._url.redacted}") \
                from exc
        except psycopg.Error as exc:
            raise translate(exc, self._url, table) from exc

    # ------------------------------------------------------------ rows

    def read(self, schema: TableSchema, filters: Sequence[RowFilter] = (),
             batch_rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        """Rows as Arrow batches, parsed from CSV COPY by Arrow (see ``_csv_read``)."""
        import pyarrow as pa
        from copyjob.connectors.postgres import _csv_read

        select = (f"SELECT {', '.join(_csv_read.select_expressions(schema))} "
                  f"FROM {self._table_sql(schema.table)}{self._where(filters)}")
        try:
            with self._conn.cursor() as cur, cur.copy(f"COPY ({select}) TO STDOUT (FORMAT csv)") as copy:
                yield from _csv_read.parse(iter(copy), schema.arrow_schema(), batch_rows)
        except (psycopg.Error, pa.ArrowException) as exc:
            raise translate(exc, self._url, schema.table) from exc

    def read_decoded(self, schema: TableSchema, filters: Sequence[RowFilter] = (),
                     batch_rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        """Rows through binary COPY decoded by psycopg (slower; kept for comparison and as a fallback)."""
        import pyarrow as pa

        reads = [_catalog.read_expression(c) for c in schema.columns]
        query = self._copy_query(schema.table, [expr for expr, _ in reads], filters)
        arrow_schema = schema.arrow_schema()
        try:
            with self._conn.cursor() as cur, cur.copy(query) as copy:
                copy.set_types([copy_type for _, copy_type in reads])
                yield from _batches(copy.rows(), batch_rows, arrow_schema)
        except (psycopg.Error, pa.ArrowException) as exc:
            raise translate(exc, self._url, schema.table) from exc

    def copy_out_binary(self, schema: TableSchema, filters: Sequence[RowFilter] = ()) -> Iterator[bytes]:
        """Raw binary COPY of the columns as they are (the destination's types match them)."""
        query = self._copy_query(schema.table, [quote_double(c.name) for c in schema.columns], filters)
        try:
            yield from copy_out_chunks(self._conn, query)
        except psycopg.Error as exc:
            raise translate(exc, self._url, schema.table) from exc

    def _copy_query(self, table: TableName, exprs: list[str], filters: Sequence[RowFilter]) -> str:
        select = f"SELECT {', '.join(exprs)} FROM {self._table_sql(table)}{self._where(filters)}"
        return f"COPY ({select}) TO STDOUT (FORMAT binary)"

    # ------------------------------------------------------------ aggregates

    def max_value(self, table: TableName, column: str) -> Any:
        return self._scalar(table, f"SELECT max({quote_double(column)}) FROM {self._table_sql(table)}")[0]

    def count(self, table: TableName, filters: Sequence[RowFilter] = ()) -> int:
        row = self._scalar(table, f"SELECT count(*) FROM {self._table_sql(table)}{self._where(filters)}")
        return int(row[0])

    def key_range(self, table: TableName, column: str) -> tuple[Any, Any]:
        col = quote_double(column)
        row = self._scalar(table, f"SELECT min({col}), max({col}) FROM {self._table_sql(table)}")
        return row[0], row[1]

    def _scalar(self, table: TableName, query: str) -> tuple[Any, ...]:
        try:
            row = self._conn.execute(query).fetchone()
        except psycopg.Error as exc:
            raise translate(exc, self._url, table) from exc
        assert row is not None  # aggregates always return one row
        return row

    # ------------------------------------------------------------ plumbing

    def _table_sql(self, table: TableName) -> str:
        return qualified(_catalog.with_schema(table), quote_double)

    def _where(self, filters: Sequence[RowFilter]) -> str:
        """`` WHERE …`` with the values bound client-side as literals: COPY takes no server parameters."""
        # % is doubled in identifiers so that the binding step reads only our placeholders
        where, params = render_filters(filters, lambda n: quote_double(n).replace("%", "%%"))
        if not where:
            return ""
        return psycopg.ClientCursor(self._conn).mogrify(where, params)

    def clone(self) -> PostgresSource:
        return PostgresSource(self._url, self._snapshot)

    def digests(self) -> RowDigests:
        """Row counts and hashes computed in the database (``copyjob verify``)."""
        from copyjob.connectors._digest_sql import postgres_digests

        return postgres_digests(self._conn)

    def close(self) -> None:
        self._conn.close()


def _batches(rows: Iterator[tuple[Any, ...]], batch_rows: int, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Group rows into batches of ``batch_rows``: only one batch of Python rows is alive at a time."""
    from copyjob.connectors._arrow import rows_to_batch

    chunk: list[tuple[Any, ...]] = []
    append = chunk.append
    for row in rows:
        append(row)
        if len(chunk) >= batch_rows:
            yield rows_to_batch(chunk, schema)
            chunk.clear()
    if chunk:
        yield rows_to_batch(chunk, schema)
