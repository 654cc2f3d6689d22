"""Row counts and digests of rows that only exist as files (``copyjob verify``): a file-set source or a
folder of output files. The caller reads the files with the copy's own readers (Arrow record batches); here
they are loaded once into a private DuckDB database file in a temporary folder (its buffer pool capped at
``MEMORY_LIMIT``) and hashed with the DuckDB dialect (``connectors/_digest_sql.py``), so files are compared
like a table."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copyjob.connectors._digest_sql import DUCKDB_MEMORY_LIMIT, SqlDigests, duckdb_digests
from copyjob.connectors._sql import qualified, quote_double, render_filters

from copyjob.core.contracts import DigestColumn, KeySpan, RowDigests, RowFilter
from copyjob.core.schema import TableName, TableSchema

if TYPE_CHECKING:
    import pyarrow as pa

MEMORY_LIMIT = DUCKDB_MEMORY_LIMIT
"""The limit duckdb_digests sets on every verify DuckDB (a loaded table is scanned, never sorted whole)."""
ORDER_COLUMN = "__copyjob_order"
"""The load order of each row (files in copy order, rows in file order): the last one of a key wins a merge."""
FILE_COLUMN = "__copyjob_file"
"""The file each row was read from (never hashed: digests hash the columns they are given)."""


class ArrowDigests:
    """:class:`copyjob.core.contracts.RowDigests` over rows loaded from Arrow batches (:meth:`load`)."""

    def __init__(self) -> None:
        import duckdb

        self._spill = tempfile.mkdtemp(prefix="copyjob-verify-")
        # a database file in the temporary folder, not in memory: the rows loaded are written out and read back
        # through the buffer pool, which the memory limit bounds (an in-memory table stays whole in memory)
        self._con = duckdb.connect(str(Path(self._spill) / "rows.duckdb"),
                                   config={"memory_limit": MEMORY_LIMIT, "temp_directory": self._spill})
        self._con.execute("SET TimeZone = 'UTC'")
        self._sql: SqlDigests = duckdb_digests(self._con)

    def load(self, table: TableName, schema: TableSchema, batches: Iterable[tuple[str, pa.RecordBatch]],
             last_per_key: Sequence[str] = ()) -> int:
        """Load ``batches`` (each with the file it was read from, of ``schema.arrow_schema()``) as ``table``,
        replacing what it held; ``last_per_key``: keep only the last row of each key, as a merge of the same rows
        in the same order leaves them. Returns the rows kept."""
        import duckdb
        import pyarrow as pa

        arrow = schema.arrow_schema()
        with_order = arrow.append(pa.field(ORDER_COLUMN, pa.int64())).append(pa.field(FILE_COLUMN, pa.string()))
        failed: list[BaseException] = []

        def numbered() -> Iterator[pa.RecordBatch]:
            seen = 0
            try:
                for file, batch in batches:
                    order = pa.array(range(seen, seen + batch.num_rows), pa.int64())
                    seen += batch.num_rows
                    origin = pa.array([file] * batch.num_rows, pa.string())
                    yield pa.RecordBatch.from_arrays([*batch.columns, order, origin], schema=with_order)
            except BaseException as exc:  # DuckDB wraps it in its own error: raised as it was below
                failed.append(exc)
                raise

        name = self._name(table)
        if table.schema:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_double(table.schema)}")
        self._con.register("copyjob_rows", pa.RecordBatchReader.from_batches(with_order, numbered()))
        try:
            if last_per_key:
                keys = ", ".join(quote_double(k) for k in last_per_key)
                chosen = (f"SELECT * EXCLUDE ({quote_double(ORDER_COLUMN)}) FROM copyjob_rows QUALIFY "
                          f"row_number() OVER (PARTITION BY {keys} ORDER BY {quote_double(ORDER_COLUMN)} DESC) = 1")
            else:
                chosen = f"SELECT * EXCLUDE ({quote_double(ORDER_COLUMN)}) FROM copyjob_rows"
            self._con.execute(f"CREATE OR REPLACE TABLE {name} AS {chosen}")
        except duckdb.Error as exc:
            if failed:
                raise failed[0] from exc
            raise
        finally:
            self._con.unregister("copyjob_rows")
        ((count,),) = self._con.execute(f"SELECT COUNT(*) FROM {name}").fetchall()
        return int(count)

    def files_of(self, table: TableName, key: Sequence[str], keys: Iterable[Sequence[Any]]) -> set[str]:
        """The files that the rows of ``keys`` (values of the ``key`` columns) were read from."""
        where = " AND ".join(f"{quote_double(k)} = ?" for k in key)
        found: set[str] = set()
        cur = self._con.cursor()
        try:
            for values in keys:
                sql = f"SELECT DISTINCT {quote_double(FILE_COLUMN)} FROM {self._name(table)} WHERE {where}"
                found.update(str(f) for (f,) in cur.execute(sql, list(values)).fetchall())
        finally:
            cur.close()
        return found

    def read(self, table: TableName, schema: TableSchema, filters: Sequence[RowFilter]) -> Iterator[pa.RecordBatch]:
        """The loaded rows matching ``filters``, as batches of ``schema.arrow_schema()`` (a repair's source)."""
        arrow = schema.arrow_schema()
        where, params = render_filters(filters, quote_double, "?")
        columns = ", ".join(quote_double(c) for c in schema.column_names)
        cur = self._con.cursor()
        try:
            found = cur.execute(f"SELECT {columns} FROM {self._name(table)}{where}", params).to_arrow_table()
        finally:
            cur.close()
        if found is not None:
            yield from found.cast(arrow).to_batches()

    def _name(self, table: TableName) -> str:
        return qualified(table, quote_double)

    # ------------------------------------------------------------ RowDigests

    def can_canonicalise(self, column: DigestColumn) -> bool:
        return self._sql.can_canonicalise(column)

    def native_hash(self, columns: Sequence[DigestColumn]) -> str | None:
        return None

    def with_native_hash(self) -> RowDigests:
        return self

    def key_bounds(self, table: TableName, span: KeySpan) -> tuple[Any, Any, int]:
        return self._sql.key_bounds(table, span)

    def digest(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan) -> tuple[int, int]:
        return self._sql.digest(table, columns, span)

    def bucket_digests(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan,
                       width: int) -> dict[int, tuple[int, int]]:
        return self._sql.bucket_digests(table, columns, span, width)

    def split_points(self, table: TableName, span: KeySpan, parts: int) -> list[Any]:
        return self._sql.split_points(table, span, parts)

    def rows(self, table: TableName, columns: Sequence[DigestColumn], key: Sequence[str],
             span: KeySpan) -> Iterator[tuple[tuple[Any, ...], tuple[str | None, ...]]]:
        return self._sql.rows(table, columns, key, span)

    def close(self) -> None:
        self._con.close()
        shutil.rmtree(self._spill, ignore_errors=True)
