"""Delta: a table's current version read whole, for ``copyjob verify`` (``SupportsSnapshotReads``).

Read by delta-rs's own engine (``DeltaTable.scan``), not from the data files directly: it applies deletion
vectors and adds the values of partition columns, which the Parquet files of a partitioned table do not hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from copyjob.connectors.delta.errors import translated
from copyjob.connectors.delta.types import from_storage

from copyjob.core.schema import TableSchema


def read_version(dt: Any, schema: TableSchema) -> tuple[str, Iterator[pa.RecordBatch]]:
    """The version ``dt`` stands at and its rows as batches of ``schema.arrow_schema()`` (logical types)."""
    version = f"Delta version {dt.version()}"
    stream = translated(lambda: dt.scan(columns=list(schema.column_names)), schema.table)
    reader = translated(lambda: pa.RecordBatchReader.from_stream(stream), schema.table)
    return version, _batches(reader, schema)


def _batches(reader: pa.RecordBatchReader, schema: TableSchema) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = translated(reader.read_next_batch, schema.table)
        except StopIteration:
            return
        yield from from_storage(pa.Table.from_batches([batch]), schema).to_batches()
