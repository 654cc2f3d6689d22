"""Bucket hashes of an integer key computed from Arrow (``copyjob verify`` over DuckDB): each bucket's rows'
texts in key order joined by U+001D and hashed whole (``_canonical.ordered_hash``), in Arrow and ``hashlib``
instead of the database's ordered aggregate, which buffers and sorts every row of every bucket.

The database returns a part's rows as they are stored (no ``ORDER BY``): a table copied in key order comes back
in key order; rows that do not are sorted here by key, in Arrow.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from copyjob.connectors._canonical import ROW_SEPARATOR

if TYPE_CHECKING:
    import pyarrow as pa


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


def _md5s(texts: pa.Array) -> list[bytes]:
    """The MD5 of each value's UTF-8 bytes (a ``large_string`` array), read in place from its buffers."""
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = memoryview(offsets_buffer).cast("q")
    data = memoryview(data_buffer) if data_buffer is not None else memoryview(b"")
    first = texts.offset
    return [hashlib.md5(data[offsets[i]:offsets[i + 1]]).digest() for i in range(first, first + len(texts))]
