"""The watermark poller: which rows an incremental copy reads, and the watermark it leaves behind.

A run reads ``MAX(column)`` once at its start (the *upper bound*) and copies the rows in
``(watermark, upper]``; rows committed later with a larger value wait for the next run. Under merge the
lower bound is inclusive: rows that share the last watermark value and arrived after the previous run read
it are copied again, and merge makes that idempotent. Under append it is exclusive, so nothing is doubled.
Rows whose column is NULL can never pass a range: a full copy takes them; an incremental run counts them
and reports the count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from copyjob.core.contracts import Bound, RowFilter, Source
from copyjob.core.schema import TableName


@dataclass(frozen=True)
class IncrementPlan:
    """What one table's run reads. ``reads`` are filter lists read one after another (unioned)."""

    full: bool
    reads: list[list[RowFilter]] = field(default_factory=list)
    watermark_before: Any = None
    watermark_after: Any = None
    null_rows: int = 0

    @property
    def nothing_to_read(self) -> bool:
        return not self.reads


def plan_full(source: Source, table: TableName, column: str | None) -> IncrementPlan:
    """A full copy. With an incremental column, bounded by its maximum so the next run starts after it."""
    if column is None:
        return IncrementPlan(full=True, reads=[[]])
    upper = source.max_value(table, column)
    if upper is None:  # empty, or every value NULL: copy everything, no watermark yet
        return IncrementPlan(full=True, reads=[[]])
    return IncrementPlan(
        full=True,
        reads=[[RowFilter(column, upper=Bound(upper, True))], [RowFilter(column, only_nulls=True)]],
        watermark_after=upper,
    )


def plan_incremental(source: Source, table: TableName, column: str, watermark: Any,
                     *, reread_boundary: bool) -> IncrementPlan:
    """Rows past ``watermark`` up to today's maximum; NULL rows counted, not read."""
    upper = source.max_value(table, column)
    null_rows = source.count(table, [RowFilter(column, only_nulls=True)])
    if upper is None or _not_after(upper, watermark, reread_boundary):
        return IncrementPlan(full=False, watermark_before=watermark, watermark_after=watermark,
                             null_rows=null_rows)
    window = RowFilter(column, lower=Bound(watermark, reread_boundary), upper=Bound(upper, True))
    return IncrementPlan(full=False, reads=[[window]], watermark_before=watermark, watermark_after=upper,
                         null_rows=null_rows)


def _not_after(upper: Any, watermark: Any, inclusive: bool) -> bool:
    try:
        return bool(upper < watermark) if inclusive else bool(upper <= watermark)
    except TypeError:  # e.g. naive vs aware datetimes: let the database compare
        return False
