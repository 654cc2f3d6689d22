"""One table of a CDC run: where it stands, its snapshot, and the change batches applied to it.

A table's position lives in its destination marker (``_copyjob_state``), committed with the data:
``{"mode": "cdc", "snapshot": "completed", "position": …}``. A snapshot whose position the source only names
after the read (``snapshot: "pending"``) becomes complete with a marker-only commit; a crash in between makes
the next run snapshot the table again. The state store gets a copy for ``copyjob status`` (the marker wins).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from copyjob.apply import prepare_target, write_batches
from copyjob.apply.changes import APPEND_COLUMNS, apply_changes
from copyjob.core.changes import UNCHANGED_TOAST, ChangeBatch, ChangeEvent
from copyjob.core.contracts import (
    Destination,
    Source,
    StateMarker,
    TableRunRecord,
    TableState,
    UpdateMethod,
)
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableSchema
from copyjob.offsets.ledger import Ledger
from copyjob.progress import Progress
from copyjob.snapshot import read_table

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("copyjob.cdc")
Position = Mapping[str, Any]
Order = Callable[[Position, Position], bool]
"""``at_or_before(a, b)``: the source's order of positions."""


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
        self.source_columns = tuple(self.plan.source_schema.column_names)
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
                              error=self.error)


def marker_state(position: Position | None) -> dict[str, Any]:
    if position is None:
        return {"mode": "cdc", "snapshot": "pending"}
    return {"mode": "cdc", "snapshot": "completed", "position": dict(position)}


def reconcile(ledger: Ledger, destination: Destination, plan: TablePlan) -> CdcTable:
    """The table's position from its destination marker (offsets.ledger: a missing table or marker, or a reset
    after the marker, means a new snapshot)."""
    standing = ledger.reconcile(plan.state_key, destination, plan.target_schema.table, mode="cdc")
    state = standing.state
    committed: Position | None = standing.marker.state.get("position") if standing.marker is not None else None
    found = standing.found
    had = bool(state.extra.get("cdc_position")) or (found is not None and found.state.get("mode") == "cdc")
    return CdcTable(plan=plan, state=state, committed=committed, resnapshot=committed is None and had,
                    before=committed, source_columns=tuple(plan.source_schema.column_names))


def forget_abandoned(ledger: Ledger, keep: set[str], stamp: str) -> None:
    """Tables that were streamed but are no longer cdc tables of the job: their stream moves on without them,
    so they must be snapshotted again if they come back."""
    for name, state in ledger.load_all().items():
        if name not in keep and state.extra.get("cdc_position") and not state.needs_full:
            log.info("%s is no longer a cdc table of the job: it will be snapshotted if it comes back", name)
            state.needs_full = True
            state.extra.pop("cdc_position", None)
            state.extra["reset_at"] = stamp
            ledger.save(state)


# ---------------------------------------------------------------- snapshot


def write_snapshot(t: CdcTable, destination: Destination, source: Source, position: Position | None, *,
                   job: str, run_id: str, batch_rows: int, parallel: int, create: bool, progress: Progress,
                   stop: Callable[[], bool]) -> int:
    """Read the whole table from ``source`` (pinned to the snapshot) and write it in one transaction with its
    marker. A table created now is loaded without its key (added at the end); under merge an existing table
    is upserted, or replaced when ``t.resnapshot``; under append rows get op ``r``."""
    wanted = _with_change_columns(t.target()) if t.append else t.target()
    prepared = prepare_target(destination, wanted, create=create, defer_key=True)
    deferred = wanted.primary_key if prepared.created else ()
    truncate = not prepared.created and ((t.resnapshot and not t.append) or t.plan.table.truncate_before_full_load)
    method: UpdateMethod = "append" if t.append or prepared.created or truncate else "merge"
    read = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal read
        for batch in read_table(source, t.plan.source_schema, (), batch_rows, parallel):
            if stop():
                raise InterruptedError(f"{t.plan.label}: snapshot stopped")
            read += batch.num_rows
            yield _change_columns(batch, position) if t.append else batch

    marker = StateMarker(job=job, table=t.key, run_id=run_id, state=marker_state(position))
    with progress.table(f"{t.plan.label} (snapshot)") as advance:
        written = write_batches(destination, wanted, [batches()], method=method, key=t.plan.key,
                                truncate=truncate, deferred_key=deferred,
                                marker=lambda: marker, progress=advance).rows_written
    t.snapshot_done(read, written, position)
    return written


def complete_snapshot(t: CdcTable, destination: Destination, position: Position, *, job: str,
                      run_id: str) -> None:
    """A marker-only commit: the snapshot written with a pending marker belongs to ``position``."""
    session = destination.begin_load(t.target(), "append", ())
    try:
        session.commit(StateMarker(job=job, table=t.key, run_id=run_id, state=marker_state(position)))
    except BaseException:
        session.abort()
        raise
    t.committed = position


def _with_change_columns(schema: TableSchema) -> TableSchema:
    return TableSchema(schema.table, (*schema.columns, *APPEND_COLUMNS), ())


def _change_columns(batch: pa.RecordBatch, position: Position | None) -> pa.RecordBatch:
    import pyarrow as pa

    n = batch.num_rows
    text = json.dumps(dict(position), sort_keys=True) if position is not None else None
    extra = [pa.array(["r"] * n, pa.string()), pa.array([text] * n, pa.string()),
             pa.nulls(n, pa.timestamp("us", tz="UTC"))]
    return pa.RecordBatch.from_arrays([*batch.columns, *extra],
                                      names=[*batch.schema.names, *(c.name for c in APPEND_COLUMNS)])


# ---------------------------------------------------------------- stream


def apply_batch(t: CdcTable, destination: Destination, batch: ChangeBatch, *, at_or_before: Order, job: str,
                run_id: str, create: bool) -> None:
    """Apply the batch's changes after the table's position, in one transaction with the new position."""
    events: Iterable[Any] = batch.events
    committed = t.committed
    if committed is not None and batch.events and at_or_before(batch.events[0].position, committed):
        events = [e for e in batch.events if not at_or_before(e.position, committed)]
    fresh = list(events)
    t.rows_read += len(fresh)
    if not fresh:
        return
    if not t.append:
        fresh = split_key_changes(fresh, tuple(t.plan.table.key or t.plan.source_schema.primary_key))
    names = tuple(batch.schema.column_names)
    target = t.target(batch.schema)
    if names != t.source_columns:  # columns added at the source: add them (dropped ones stay, NULL from now)
        prepare_target(destination, _with_change_columns(target) if t.append else target, create=create,
                       defer_key=False)
        log.info("%s: the source columns changed to %s", t.plan.label, ", ".join(names))
        t.source_columns = names
    marker = StateMarker(job=job, table=t.key, run_id=run_id, state=marker_state(batch.position))
    result = apply_changes(destination, target, replace(batch, events=fresh), method=t.plan.table.update_method,
                           key=t.plan.key, rename=t.plan.table.columns, marker=lambda: marker)
    t.rows_written += result.upserted + result.deleted + result.appended
    t.committed = batch.position


def split_key_changes(events: list[ChangeEvent], key: tuple[str, ...]) -> list[ChangeEvent]:
    """An update that changes the key as a delete of the old key and an insert of the new one (the binlog logs
    it as one update; pgoutput already splits it): merge then removes the old key, and on Kafka the two keys
    may live in different partitions."""
    if not key or not any(e.op == "u" and e.before is not None for e in events):
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


def save_state(ledger: Ledger, t: CdcTable, run_id: str, describe: Callable[[Position], str],
               extra: Mapping[str, Any] | None = None) -> None:
    s = t.state
    s.last_run_id = run_id
    s.last_run_at = datetime.now(UTC)
    s.last_status = "failed" if t.error else "ok"
    s.last_error = t.error
    if t.committed is not None:
        s.watermark = describe(t.committed)
        s.watermark_type = "str"
        s.needs_full = False
        s.extra["cdc_position"] = dict(t.committed)
        s.extra["committed_run_id"] = run_id
    s.extra.update(extra or {})
    ledger.save(s)
