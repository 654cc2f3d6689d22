"""A load's ``delete_keys`` / ``update_columns`` calls, remembered and applied in Arrow at commit, in call order
(connectors/_keys.py): each touches the table's rows and the rows the load wrote before the call, never those
written after it, so a later ``write`` of a key wins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class KeyOp:
    kind: Literal["delete", "update"]
    key: tuple[str, ...]
    rows: pa.Table
    """The key columns (one row per key, no NULLs) and, for an update, the columns it sets."""
    columns: tuple[str, ...]
    """The columns an update sets."""
    before: int
    """Rows the load had written when the call came: the call touches only those of the load's rows."""


def match_index(table: pa.Table, keys: pa.Table, key: Sequence[str]) -> pa.Array:
    """For each row of ``table``, the index of the row of ``keys`` (unique, no NULLs) with its key, or NULL."""
    if len(key) == 1:
        k = key[0]
        found = pc.index_in(table[k], value_set=keys[k].combine_chunks().cast(table.schema.field(k).type))
        return found.combine_chunks() if isinstance(found, pa.ChunkedArray) else found
    row, match = "__copyjob_row", "__copyjob_match"
    left = pa.Table.from_arrays([*(table[k] for k in key), pa.array(range(table.num_rows), pa.int64())],
                                names=[*key, row])
    right = pa.Table.from_arrays([*(keys[k].cast(table.schema.field(k).type) for k in key),
                                  pa.array(range(keys.num_rows), pa.int64())], names=[*key, match])
    joined = left.join(right, list(key), join_type="left outer", use_threads=False).sort_by(row)
    return joined[match].combine_chunks()


def apply_ops(table: pa.Table, ops: Sequence[KeyOp], positions: pa.Array | None) -> tuple[pa.Table, pa.Array | None]:
    """``table`` with the deletes and updates applied in call order; with ``positions`` (rows of this load,
    numbered in load order) each op touches only the rows loaded before it. Returns what remains."""
    for op in ops:
        if table.num_rows == 0:
            break
        index = match_index(table, op.rows, op.key)
        hit = pc.is_valid(index)
        if positions is not None:
            hit = pc.and_(hit, pc.less(positions, op.before))
        if op.kind == "delete":
            keep = pc.invert(hit)
            table = table.filter(keep)
            positions = positions.filter(keep) if positions is not None else None
            continue
        for name in op.columns:
            i = table.schema.get_field_index(name)
            if i < 0:
                continue
            f = table.schema.field(i)
            new = op.rows[name].combine_chunks().cast(f.type).take(index)
            table = table.set_column(i, f, pc.if_else(hit, new, table[name].combine_chunks()))
    return table, positions


def hits(table: pa.Table, op: KeyOp) -> int:
    """How many rows of ``table`` have a key of ``op``."""
    if table.num_rows == 0:
        return 0
    return int(pc.sum(pc.is_valid(match_index(table, op.rows, op.key))).as_py() or 0)


def without_keys(table: pa.Table, keys: pa.Table, key: Sequence[str]) -> pa.Table:
    """The rows of ``table`` whose key is not in ``keys`` (an anti join)."""
    if table.num_rows == 0 or keys.num_rows == 0:
        return table
    return table.filter(pc.invert(pc.is_valid(match_index(table, keys, key))))
