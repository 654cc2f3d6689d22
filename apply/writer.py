"""Writing batches into a destination table with one update method, committed with their state marker."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from copyjob.core import faults
from copyjob.core.contracts import Destination, StateMarker, UpdateMethod
from copyjob.core.schema import TableSchema

if TYPE_CHECKING:
    import pyarrow as pa

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class WriteResult:
    rows_written: int


def renamed(batches: Iterable[pa.RecordBatch], target: TableSchema) -> Iterator[pa.RecordBatch]:
    """Batches relabelled with the destination's column names and Arrow schema (same order, same types)."""
    import pyarrow as pa

    arrow_schema = target.arrow_schema()
    for batch in batches:
        yield pa.RecordBatch.from_arrays(batch.columns, schema=arrow_schema)


def write_batches(destination: Destination, target: TableSchema, loads: Sequence[Iterable[pa.RecordBatch]],
                  *, method: UpdateMethod, key: Sequence[str], truncate: bool, deferred_key: Sequence[str],
                  marker: Callable[[], StateMarker | None], progress: ProgressCallback) -> WriteResult:
    """Load every batch of every iterable in ``loads`` in one transaction.

    Steps:
    1. open the load (overwrite or truncate empty the table inside the transaction);
    2. write each batch, reporting progress;
    3. commit the data together with ``marker()`` (built after the last batch, so it can describe it);
    on any error, roll back: the table and its marker stay as they were.
    """
    session = destination.begin_load(target, method, key, truncate=truncate, deferred_key=deferred_key)
    rows = 0
    try:
        for batches in loads:
            for batch in renamed(batches, target):
                if batch.num_rows:
                    rows += session.write(batch)
                    progress(batch.num_rows)
                    faults.passed("batch-written")
        session.commit(marker())
    except BaseException:
        session.abort()
        raise
    return WriteResult(rows_written=rows)


def write_binary(destination: Destination, target: TableSchema, streams: Sequence[Iterable[bytes]], *,
                 method: UpdateMethod, truncate: bool, deferred_key: Sequence[str],
                 marker: Callable[[], StateMarker | None], progress: ProgressCallback) -> WriteResult:
    """Like :func:`write_batches` for PostgreSQL binary COPY streams passed through undecoded."""
    session = destination.begin_load(target, method, (), truncate=truncate, deferred_key=deferred_key)
    rows = 0
    try:
        for stream in streams:
            n = session.write_binary(iter(stream))
            rows += n
            progress(n)
        session.commit(marker())
    except BaseException:
        session.abort()
        raise
    return WriteResult(rows_written=rows)
