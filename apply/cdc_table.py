"""One table of a CDC run as its sink sees it (:class:`CdcTable`), and the contract of such a sink (:class:`CdcSink`).

The CDC orchestrator (the application's) reads a change stream and hands each table's snapshot and changes to
a sink: :class:`copyjob.apply.destination_sink.DestinationSink` (``transport: direct``) writes them into the
destination with the table's marker, :class:`copyjob.apply.topic_sink.KafkaSink` publishes them onto the
table's topic. A sink moves ``CdcTable.committed`` only once what it was handed is durable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from copyjob.core.changes import UNCHANGED_TOAST, ChangeBatch, ChangeEvent, ColumnarInserts
from copyjob.core.contracts import Source, TableRunRecord, TableState
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableSchema

if TYPE_CHECKING:
    from copyjob.offsets.ledger import Ledger

Position = Mapping[str, Any]
Order = Callable[[Position, Position], bool]
"""``at_or_before(a, b)``: the source's order of positions."""
ProgressCallback = Callable[[int], None]
"""Adds rows written to the table's progress."""


def logged_columns(schema: TableSchema) -> tuple[str, ...]:
    """The columns whose values a change log carries: all but stored generated ones (pgoutput leaves them out;
    a destination that computes them is the only way they stay right)."""
    return tuple(c.name for c in schema.columns if not c.generated)


@dataclass(eq=False)
class CdcTable:
    plan: TablePlan
    state: TableState
    committed: Position | None
    """Where its last committed marker stands; None: the table needs a snapshot."""
    resnapshot: bool = False
    """It had a position before (reset, or the stream was lost): under merge its snapshot replaces the table."""
    before: Position | None = None
    source_columns: tuple[str, ...] = ()
    """The source columns the destination table was last prepared for; () until the first snapshot or batch of
    this run prepares it (the run's reflection may already hold columns added while copyjob was stopped)."""
    redefined: str | None = None
    """Why the job file's edit makes it start over (offsets.ledger): its snapshot replaces the table."""
    note: str | None = None
    """Why an edit of the job file makes it start over, for the run's summary (``redefined``, or a new target)."""
    rows_read: int = 0
    rows_written: int = 0
    error: str | None = None
    status: str = "ok"

    @property
    def key(self) -> str:
        return self.plan.state_key

    def snapshot_done(self, read: int, written: int, position: Position | None) -> None:
        """Count a finished snapshot load and note where it leaves the table (the snapshot's position)."""
        self.rows_read += read
        self.rows_written += written
        self.source_columns = logged_columns(self.plan.source_schema)
        if position is not None:
            self.committed = position

    @property
    def append(self) -> bool:
        return self.plan.table.update_method == "append"

    def target(self, schema: TableSchema | None = None) -> TableSchema:
        """The destination table for source columns ``schema`` (default: as reflected at the start): renamed;
        keyed under merge; under append without a key and nullable (the change columns are added by the
        callers that create or write it)."""
        rename = self.plan.table.columns
        columns = tuple(replace(c, name=rename.get(c.name, c.name))
                        for c in (schema or self.plan.source_schema).columns)
        if self.append:  # every column nullable: deletes carry only the key, truncates no values at all
            return TableSchema(self.plan.target_schema.table, tuple(replace(c, nullable=True) for c in columns), ())
        return TableSchema(self.plan.target_schema.table, columns, self.plan.key)

    def record(self, describe: Callable[[Position], str], duration_s: float) -> TableRunRecord:
        return TableRunRecord(table=self.key, mode="cdc", status=self.status, rows_read=self.rows_read,
                              rows_written=self.rows_written, duration_s=duration_s,
                              watermark_before=describe(self.before) if self.before else None,
                              watermark_after=describe(self.committed) if self.committed else None,
                              error=self.error, note=self.note or self.redefined)


class CdcSink(Protocol):
    """Where a CDC run commits its tables' snapshots and changes, each with the table's new position."""

    positions_in_store: bool
    """The state store is where positions are durable (save after every commit, before the ack)."""
    batch_rows: int
    """The most rows a snapshot batch should have."""

    def reconcile(self, ledger: Ledger, plan: TablePlan) -> CdcTable:
        """The table with its committed position (None: it needs a snapshot)."""

    def write_snapshot(self, t: CdcTable, source: Source, position: Position | None, *, run_id: str,
                       parallel: int, progress: ProgressCallback, stop: Callable[[], bool]) -> int:
        """Read the whole table from ``source`` and commit it with ``position`` (None: named later)."""

    def complete_snapshot(self, t: CdcTable, position: Position, *, run_id: str) -> None: ...

    def apply(self, t: CdcTable, batch: ChangeBatch, *, at_or_before: Order, run_id: str) -> None:
        """Hand over the changes after ``t.committed``; ``t.committed`` moves once they are durable."""

    def takes_columns(self, plans: Sequence[TablePlan]) -> bool:
        """Whether :meth:`apply` gains from runs of inserts held column-wise
        (:class:`~copyjob.core.changes.ColumnarInserts`) for these tables: the capture then keeps them so where
        it can (it costs the tables that need events a little)."""

    def commit(self) -> None:
        """Make everything handed over durable (a no-op where ``apply`` already committed)."""

    def background(self) -> AbstractContextManager[CdcSink]:
        """A sink for a snapshot in another thread."""


def split_key_changes(events: Sequence[ChangeEvent], key: tuple[str, ...]) -> Sequence[ChangeEvent]:
    """An update that changes the key as a delete of the old key and an insert of the new one (the binlog logs
    it as one update; pgoutput already splits it): merge then removes the old key, and on Kafka the two keys
    may live in different partitions."""
    if not key or isinstance(events, ColumnarInserts) or not any(e.op == "u" and e.before is not None for e in events):
        return events
    out: list[ChangeEvent] = []
    for e in events:
        if e.op == "u" and e.before is not None and e.after is not None \
                and any(e.before.get(k) != e.after.get(k) and e.after.get(k) is not UNCHANGED_TOAST for k in key):
            out.append(ChangeEvent("d", e.before, None, e.position, e.ts_ms))
            out.append(ChangeEvent("c", None, e.after, e.position, e.ts_ms))
        else:
            out.append(e)
    return out
