"""Iceberg: a table's current snapshot read whole, for ``copyjob verify`` (``SupportsSnapshotReads``).

Read by pyiceberg's own scan (``to_arrow_batch_reader``), not from the data files directly: it applies the
snapshot's delete files, which copyjob never writes but other tools may.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from copyjob.connectors.iceberg.types import to_logical_arrow

from copyjob.core.schema import TableSchema

if TYPE_CHECKING:
    from pyiceberg.table import Table

Guard = Callable[[Callable[[], Any]], Any]
"""Runs a call on the table, translating failures to reach its files (the destination's ``_guard``)."""


def version_of(table: Table) -> str:
    """The current snapshot, named by its id."""
    snapshot = table.current_snapshot()
    return "no Iceberg snapshot yet" if snapshot is None else f"Iceberg snapshot {snapshot.snapshot_id}"


def read_current(table: Table, schema: TableSchema, guard: Guard) -> tuple[str, Iterator[pa.RecordBatch]]:
    """The current snapshot's id and its rows as batches of ``schema.arrow_schema()`` (logical types)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return version_of(table), iter(())
    reader = guard(lambda: table.scan(snapshot_id=snapshot.snapshot_id).to_arrow_batch_reader())
    return version_of(table), _batches(reader, schema, guard)


def _batches(reader: pa.RecordBatchReader, schema: TableSchema, guard: Guard) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = guard(reader.read_next_batch)
        except StopIteration:
            return
        logical = to_logical_arrow(pa.Table.from_batches([batch]), schema.columns)
        yield from logical.cast(schema.arrow_schema()).to_batches()
