"""Row counts and digests of a lakehouse table (Delta, Iceberg) for ``copyjob verify``.

The table's current snapshot is read through its format's own reader (``SupportsSnapshotReads``: deletion
vectors, delete files and partition values applied), cast back to the logical Arrow types its columns were
created with, and streamed batch by batch into a private DuckDB database file (``connectors/_digest_arrow.py``:
memory capped, the rows on disk), where it is hashed with the DuckDB dialect like a Parquet folder. The snapshot stays
pinned while ranges are compared, so they all see one consistent version; :meth:`SnapshotDigests.refresh`
reads the table again once a newer snapshot was committed (a CDC re-check, after a repair).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from copyjob.connectors._digest_arrow import ArrowDigests

from copyjob.core.contracts import DigestColumn, KeySpan, RowDigests, SupportsSnapshotReads
from copyjob.core.schema import LogicalType, TableName, TableSchema

DUCKDB_MAX_PRECISION = 38


class SnapshotDigests:
    """:class:`copyjob.core.contracts.RowDigests` over one lakehouse table's snapshot."""

    def __init__(self, destination: SupportsSnapshotReads, schema: TableSchema) -> None:
        self._destination, self._schema = destination, _as_loaded(schema)
        self._arrow = ArrowDigests()
        self.version: str | None = None
        self.row_count = 0
        try:
            self._load()
        except BaseException:
            self._arrow.close()
            raise

    @property
    def note(self) -> str:
        return f"{self.version} read ({self.row_count} rows)"

    def refresh(self) -> bool:
        """Read the table again when a newer snapshot than the one loaded was committed; whether it was."""
        if self._destination.snapshot_version(self._schema.table) == self.version:
            return False
        self._load()
        return True

    def _load(self) -> None:
        version, batches = self._destination.read_snapshot(self._schema.table, self._schema)
        self.row_count = self._arrow.load(self._schema.table, self._schema, (("", b) for b in batches))
        self.version = version

    # ------------------------------------------------------------ RowDigests

    def can_canonicalise(self, column: DigestColumn) -> bool:
        return not _wide(column.have.type) and self._arrow.can_canonicalise(column)

    def native_hash(self, columns: Sequence[DigestColumn]) -> str | None:
        return None

    def with_native_hash(self) -> RowDigests:
        return self

    def key_bounds(self, table: TableName, span: KeySpan) -> tuple[Any, Any, int]:
        return self._arrow.key_bounds(table, span)

    def digest(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan) -> tuple[int, int]:
        return self._arrow.digest(table, columns, span)

    def bucket_digests(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan,
                       width: int) -> dict[int, tuple[int, int]]:
        return self._arrow.bucket_digests(table, columns, span, width)

    def split_points(self, table: TableName, span: KeySpan, parts: int) -> list[Any]:
        return self._arrow.split_points(table, span, parts)

    def rows(self, table: TableName, columns: Sequence[DigestColumn], key: Sequence[str],
             span: KeySpan) -> Iterator[tuple[tuple[Any, ...], tuple[str | None, ...]]]:
        return self._arrow.rows(table, columns, key, span)

    def close(self) -> None:
        self._arrow.close()


def _wide(t: LogicalType) -> bool:
    return t.kind == "decimal" and t.precision is not None and t.precision > DUCKDB_MAX_PRECISION


def _as_loaded(schema: TableSchema) -> TableSchema:
    """The columns as loaded into DuckDB: decimals wider than it holds stay the exact text both formats store
    them as, and are hashed in Python (where the canonical text is defined)."""
    columns = tuple(replace(c, type=LogicalType("string")) if _wide(c.type) else c for c in schema.columns)
    return replace(schema, columns=columns)
