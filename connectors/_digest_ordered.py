"""Bucket hashes of an integer key computed from Arrow (``copyjob verify`` over DuckDB): each bucket's rows'
texts in key order joined by U+001D and hashed whole (``_canonical.ordered_hash``), in Arrow and ``hashlib``
instead of the database's ordered aggregate, which buffers and sorts every row of every bucket.

The database returns a part's rows as they are stored (no ``ORDER BY``): a table copied in key order comes back
in key order; rows that do not are sorted here by key, in Arrow.

A whole span is read as one stream (:func:`gathered_bucket_hashes`: one query, the database's threads at once,
no row group read twice) when its buckets' row counts are known: a bucket is hashed as soon as all its rows
came, so a table stored in runs of rising keys (a parallel copy appends its chunks as they come) holds only the
buckets at the runs' ends. Rows further out of order than :data:`HELD_ROWS` give the stream up (the caller reads
the span part by part).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from copyjob.connectors._canonical import ROW_SEPARATOR

if TYPE_CHECKING:
    import pyarrow as pa

HELD_ROWS = 100_000
"""Rows of unfinished buckets a stream may hold (about 10 MB of texts) before it is given up."""


def bucket_hashes(rows: pa.Table) -> dict[int, list[int]]:
    """``[row count, hash]`` per bucket of ``rows``, whose columns are the key, the bucket's number and the row's
    text (never NULL), in any order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if rows.num_rows == 0:
        return {}
    keys = rows.column(0)
    if rows.num_rows > 1 and not pc.all(pc.greater_equal(keys[1:], keys[:-1])).as_py():
        rows = rows.take(pc.sort_indices(keys))
    runs = pc.run_end_encode(rows.column(1).combine_chunks())
    texts = rows.column(2).combine_chunks().cast(pa.large_string())
    ends = pc.cast(runs.run_ends, pa.int64())
    offsets = pa.concat_arrays([pa.array([0], pa.int64()), ends])
    joined = pc.binary_join(pa.LargeListArray.from_arrays(offsets, texts), pa.scalar(ROW_SEPARATOR, pa.large_string()))
    bounds = offsets.to_pylist()
    return {int(b): [bounds[i + 1] - bounds[i], int.from_bytes(md5[:8], "big")]
            for i, (b, md5) in enumerate(zip(runs.values.to_pylist(), _md5s(joined), strict=True))}


def gathered_bucket_hashes(batches: Iterable[pa.RecordBatch], counts: Mapping[int, int],
                           held_rows: int | None = None) -> dict[int, list[int]] | None:
    """:func:`bucket_hashes` of a stream of batches (columns as there) in any order, each bucket hashed once
    ``counts`` of its rows came; None when the stream is further out of order than ``held_rows`` (default
    :data:`HELD_ROWS`), or a bucket
    gets more rows than counted, or rows after it was hashed (a writer changed the table meanwhile). Buckets
    still short at the end (rows deleted meanwhile) are hashed with what came: a real difference is found
    again when the bucket is bisected."""
    import pyarrow as pa
    import pyarrow.compute as pc

    limit = HELD_ROWS if held_rows is None else held_rows
    found: dict[int, list[int]] = {}
    held: dict[int, list[pa.Table]] = {}
    held_count: dict[int, int] = {}
    hashed: set[int] = set()
    holding = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        rows = pa.Table.from_batches([batch])
        keys = rows.column(0)
        if rows.num_rows > 1 and not pc.all(pc.greater_equal(keys[1:], keys[:-1])).as_py():
            rows = rows.take(pc.sort_indices(keys))
        runs = pc.run_end_encode(rows.column(1).combine_chunks())
        complete: list[tuple[int, list[pa.Table]]] = []
        start = 0
        for bucket, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
            piece = rows.slice(start, end - start)
            start = end
            came = held_count.get(bucket, 0) + piece.num_rows
            expected = counts.get(bucket)
            if bucket in hashed or (expected is not None and came > expected):
                return None
            if came == expected:
                pieces = held.pop(bucket, [])
                holding -= came - piece.num_rows
                held_count.pop(bucket, None)
                hashed.add(bucket)
                complete.append((bucket, [*pieces, piece]))
            else:  # a copy: a slice would keep its whole batch in memory
                held.setdefault(bucket, []).append(piece.take(pa.array(range(piece.num_rows), pa.int32())))
                held_count[bucket] = came
                holding += piece.num_rows
        if holding > limit:
            return None
        if complete:
            found.update(_complete_buckets(complete))
    if held:
        found.update(_complete_buckets(list(held.items())))
    return found


def _complete_buckets(complete: list[tuple[int, list[pa.Table]]]) -> dict[int, list[int]]:
    """:func:`bucket_hashes` of whole buckets, each given as its pieces in the order they came."""
    import pyarrow as pa

    complete.sort(key=lambda item: item[0])
    return bucket_hashes(pa.concat_tables([piece for _, pieces in complete for piece in pieces]))


def _md5s(texts: pa.Array) -> list[bytes]:
    """The MD5 of each value's UTF-8 bytes (a ``large_string`` array), read in place from its buffers."""
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = memoryview(offsets_buffer).cast("q")
    data = memoryview(data_buffer) if data_buffer is not None else memoryview(b"")
    first = texts.offset
    return [hashlib.md5(data[offsets[i]:offsets[i + 1]]).digest() for i in range(first, first + len(texts))]
