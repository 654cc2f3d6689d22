"""Row counts and digests of a Parquet destination's table folders (``copyjob verify``): DuckDB, in memory,
reads the folder's published files (``read_parquet``) and computes them with the DuckDB dialect
(``connectors/_digest_sql.py``), so a Parquet folder is compared like a database table."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from copyjob.connectors._digest_sql import SqlDigests, duckdb_digests
from copyjob.connectors._sql import quote_double

from copyjob.core.contracts import DigestColumn, KeySpan, RowDigests
from copyjob.core.schema import TableName, TableSchema


class ParquetDigests:
    """:class:`copyjob.core.contracts.RowDigests` over the Parquet files of each table's folder."""

    def __init__(self, files: Callable[[TableName], list[Path]],
                 reflect: Callable[[TableName], TableSchema | None]) -> None:
        import duckdb

        self._files, self._reflect = files, reflect
        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        self._sql: SqlDigests = duckdb_digests(self._con)
        self._made: dict[TableName, str] = {}

    def _view(self, table: TableName) -> None:
        """A DuckDB view named like the table over its files as they are now (a load replaces files: every
        question lists them again)."""
        files = self._files(table)
        schema = self._reflect(table)
        if table.schema:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_double(table.schema)}")
        name = f"{quote_double(table.schema)}.{quote_double(table.name)}" if table.schema else quote_double(
            table.name)
        if files:
            listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
            if self._made.get(table) == "TABLE":
                self._con.execute(f"DROP TABLE {name}")
            self._made[table] = "VIEW"
            self._con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{listed}], "
                              "union_by_name = true)")
        else:  # no files yet: an empty table with the folder's columns
            import pyarrow as pa

            empty = pa.table({}) if schema is None else schema.arrow_schema().empty_table()
            self._con.register("copyjob_empty", empty)
            if self._made.get(table) == "VIEW":
                self._con.execute(f"DROP VIEW {name}")
            self._made[table] = "TABLE"
            self._con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM copyjob_empty")
            self._con.unregister("copyjob_empty")

    def can_canonicalise(self, column: DigestColumn) -> bool:
        return self._sql.can_canonicalise(column)

    def native_hash(self, columns: Sequence[DigestColumn]) -> str | None:
        return None

    def with_native_hash(self) -> RowDigests:
        return self

    def key_bounds(self, table: TableName, span: KeySpan) -> tuple[Any, Any, int]:
        self._view(table)
        return self._sql.key_bounds(table, span)

    def digest(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan) -> tuple[int, int]:
        self._view(table)
        return self._sql.digest(table, columns, span)

    def bucket_digests(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan,
                       width: int) -> dict[int, tuple[int, int]]:
        self._view(table)
        return self._sql.bucket_digests(table, columns, span, width)

    def split_points(self, table: TableName, span: KeySpan, parts: int) -> list[Any]:
        self._view(table)
        return self._sql.split_points(table, span, parts)

    def rows(self, table: TableName, columns: Sequence[DigestColumn], key: Sequence[str],
             span: KeySpan) -> Iterator[tuple[tuple[Any, ...], tuple[str | None, ...]]]:
        self._view(table)
        return self._sql.rows(table, columns, key, span)

    def close(self) -> None:
        self._con.close()
