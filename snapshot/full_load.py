"""Full loads: read a table as Arrow record batches, split into key ranges read in parallel.

A table with a single integer key column is cut into ``parallel`` ranges, each read by its own connection
(``Source.clone``), plus one read of the rows whose key is NULL (SQLite allows NULL in a primary key that is
not an INTEGER rowid, and no range holds it); other tables are read by one reader. Either way reading runs in
background threads behind a bounded queue, so the writer works while the next batches arrive; memory stays at
most ``2 × parallel + 2`` batches (each range's reader may hold the batch it cannot hand over yet, besides the
queue). The rows with a NULL key are read after the ranges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from copyjob.snapshot.background import prefetch

from copyjob.core.contracts import Bound, RowFilter, Source
from copyjob.core.schema import TableSchema

if TYPE_CHECKING:
    import pyarrow as pa

INTEGER_KINDS = {"int16", "int32", "int64"}
MIN_ROWS_PER_CHUNK = 100_000


def key_chunks(source: Source, schema: TableSchema, parallel: int) -> list[RowFilter]:
    """Ranges ``[lo, hi)`` over the single integer primary key (empty when the table is not splittable)."""
    if parallel < 2 or len(schema.primary_key) != 1:
        return []
    key = schema.column(schema.primary_key[0])
    if key is None or key.type.kind not in INTEGER_KINDS:
        return []
    low, high = source.key_range(schema.table, key.name)
    if low is None or high is None or high - low < MIN_ROWS_PER_CHUNK:
        return []
    step = (high - low) // parallel + 1
    chunks = []
    for i in range(parallel):
        lo = low + i * step
        hi = min(lo + step, high + 1)
        chunks.append(RowFilter(key.name, lower=Bound(lo, True), upper=Bound(hi, False)))
        if hi > high:
            break
    return chunks


def read_table(source: Source, schema: TableSchema, filters: Sequence[RowFilter] = (),
               batch_rows: int = 50_000, parallel: int = 1) -> Iterator[pa.RecordBatch]:
    """Every row of ``schema.columns`` that matches ``filters``, as record batches (in no fixed order)."""
    chunks = key_chunks(source, schema, parallel)
    if not chunks:
        yield from prefetch([lambda: source.read(schema, filters, batch_rows)], max_buffered=2)
        return
    clones: list[Source] = []

    def reader(chunk: RowFilter) -> Callable[[], Iterable[Any]]:
        def produce() -> Iterator[pa.RecordBatch]:
            clone = source.clone()
            clones.append(clone)
            yield from clone.read(schema, [*filters, chunk], batch_rows)

        return produce

    try:
        yield from prefetch([reader(c) for c in chunks], max_buffered=len(chunks) + 1)
    finally:
        for clone in clones:
            clone.close()
    # rows whose key is NULL are in no range: read last, on the first connection
    yield from source.read(schema, [*filters, RowFilter(chunks[0].column, only_nulls=True)], batch_rows)


def read_binary(source: Source, schema: TableSchema, filters: Sequence[RowFilter] = ()) -> Iterator[bytes]:
    """The PostgreSQL binary COPY stream of the rows, read ahead in a background thread."""
    return prefetch([lambda: source.copy_out_binary(schema, filters)], max_buffered=8)
