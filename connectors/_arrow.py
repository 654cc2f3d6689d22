"""Building Arrow record batches from driver rows (for drivers that hand out Python tuples)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa


def rows_to_batch(rows: Sequence[Sequence[Any]], schema: pa.Schema,
                  converters: Sequence[Callable[[Any], Any] | None] | None = None) -> pa.RecordBatch:
    """Transpose driver rows into columns and build one batch with ``schema``.

    ``converters[i]`` (when given) maps each non-NULL value of column i first (e.g. text → Decimal).
    """
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for i, (fld, values) in enumerate(zip(schema, columns, strict=True)):
        conv = converters[i] if converters else None
        if conv is not None:
            values = tuple(None if v is None else conv(v) for v in values)
        arrays.append(pa.array(values, type=fld.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
