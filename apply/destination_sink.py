"""``transport: direct``: the CDC sink that writes into the destination (:class:`DestinationSink`).

A table's position lives in its destination marker (``_copyjob_state``), committed with the data:
``{"mode": "cdc", "snapshot": "completed", "position": …}``. A snapshot whose position the source only names
after the read (``snapshot: "pending"``) becomes complete with a marker-only commit; a crash in between makes
the next run snapshot the table again. The state store gets a copy for ``copyjob status`` (the marker wins).

When the destination goes away (a retriable error), the orchestrator tries the batch again; before that
attempt the sink opens a new connection and takes the table's position from its marker: a commit whose answer
was lost is then not applied a second time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from copyjob.apply.cdc_table import (
    CdcSink,
    CdcTable,
    Order,
    Position,
    ProgressCallback,
    split_key_changes,
)
from copyjob.apply.changes import APPEND_COLUMNS, apply_changes
from copyjob.apply.target import check_computed, prepare_target
from copyjob.apply.writer import write_batches
from copyjob.offsets.ledger import DEFINITION_KEY, Ledger
from copyjob.snapshot import read_table

from copyjob.core.changes import ChangeBatch
from copyjob.core.contracts import Destination, Source, StateMarker, UpdateMethod
from copyjob.core.errors import DataError, is_retriable
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableSchema

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


class DestinationSink:
    """Every snapshot and every batch in one destination transaction together with the table's marker (the
    marker is the truth; the state store gets copies)."""

    positions_in_store = False

    def __init__(self, job: str, destination: Destination, *, batch_rows: int, create_tables: bool,
                 open_destination: Callable[[], Destination]) -> None:
        """``open_destination``: another connection to the same destination, for a snapshot in the
        background."""
        self.job = job
        self.destination = destination
        self.create = create_tables
        self.open_destination = open_destination
        self._batch_rows = batch_rows
        self.batch_rows = min(batch_rows, destination.capabilities.preferred_batch_rows)
        self._broken = False
        """The last attempt failed with a retriable error: reconnect before the next."""

    def reconcile(self, ledger: Ledger, plan: TablePlan) -> CdcTable:
        return reconcile(ledger, self.destination, plan)

    def write_snapshot(self, t: CdcTable, source: Source, position: Position | None, *, run_id: str,
                       parallel: int, progress: ProgressCallback, stop: Callable[[], bool]) -> int:
        return write_snapshot(t, self.destination, source, position, job=self.job, run_id=run_id,
                              batch_rows=self.batch_rows, parallel=parallel, create=self.create, progress=progress,
                              stop=stop)

    def complete_snapshot(self, t: CdcTable, position: Position, *, run_id: str) -> None:
        complete_snapshot(t, self.destination, position, job=self.job, run_id=run_id)

    def apply(self, t: CdcTable, batch: ChangeBatch, *, at_or_before: Order, run_id: str) -> None:
        if self._broken:
            self._reconnect(t, at_or_before)
        try:
            apply_batch(t, self.destination, batch, at_or_before=at_or_before, job=self.job, run_id=run_id,
                        create=self.create)
        except Exception as exc:
            self._broken = is_retriable(exc)
            raise

    def takes_columns(self, plans: Sequence[TablePlan]) -> bool:
        """Merge tables write runs of inserts straight from Arrow (apply.changes.inserts_as_target); append tables
        need each change as a row."""
        return any(p.table.update_method == "merge" for p in plans)

    def _reconnect(self, t: CdcTable, at_or_before: Order) -> None:
        """A new connection, and the table's position from its marker (the last commit may have landed)."""
        try:
            self.destination.close()
        except Exception as exc:  # it is broken: nothing to release
            log.debug("closing the broken destination connection: %s", exc)
        self.destination = self.open_destination()
        marker = self.destination.read_marker(self.job, t.key)
        position = marker.state.get("position") if marker is not None else None
        if position is not None and (t.committed is None or not at_or_before(position, t.committed)):
            log.info("%s: the destination holds the changes up to %s", t.plan.label, position)
            t.committed = position
        self._broken = False

    def close(self) -> None:
        self.destination.close()

    def commit(self) -> None:
        pass

    @contextmanager
    def background(self) -> Iterator[CdcSink]:
        destination = self.open_destination()
        try:
            yield DestinationSink(self.job, destination, batch_rows=self._batch_rows, create_tables=self.create,
                                  open_destination=self.open_destination)
        finally:
            destination.close()


def marker_state(t: CdcTable, position: Position | None) -> dict[str, Any]:
    """The table's marker at ``position`` (None: a snapshot whose position is named later), with the
    definition the table is built under (offsets.ledger)."""
    definition = {DEFINITION_KEY: dict(t.plan.table.definition)}
    if position is None:
        return {"mode": "cdc", "snapshot": "pending", **definition}
    return {"mode": "cdc", "snapshot": "completed", "position": dict(position), **definition}


def reconcile(ledger: Ledger, destination: Destination, plan: TablePlan) -> CdcTable:
    """The table's position from its destination marker (offsets.ledger: a missing table or marker, or a reset
    after the marker, means a new snapshot)."""
    standing = ledger.reconcile(plan.state_key, destination, plan.target_schema.table, mode="cdc",
                                definition=plan.table.definition)
    state = standing.state
    committed: Position | None = standing.marker.state.get("position") if standing.marker is not None else None
    found = standing.found
    had = bool(state.extra.get("cdc_position")) or (found is not None and found.state.get("mode") == "cdc")
    return CdcTable(plan=plan, state=state, committed=committed, resnapshot=committed is None and had,
                    before=committed, source_columns=(),  # unknown: the first batch prepares the table
                    redefined=standing.full_reason if standing.redefined else None, note=standing.edit)


# ---------------------------------------------------------------- snapshot


def write_snapshot(t: CdcTable, destination: Destination, source: Source, position: Position | None, *,
                   job: str, run_id: str, batch_rows: int, parallel: int, create: bool, progress: ProgressCallback,
                   stop: Callable[[], bool]) -> int:
    """Read the whole table from ``source`` (pinned to the snapshot) and write it in one transaction with its
    marker. A table created now is loaded without its key (added at the end); under merge an existing table
    is upserted, or replaced when ``t.resnapshot``; under append rows get op ``r``."""
    wanted = _with_change_columns(t.target()) if t.append else t.target()
    prepared = prepare_target(destination, _indexed(wanted, t.plan.key) if t.append else wanted, create=create,
                              defer_key=True, append=t.append, replace=t.redefined is not None)
    check_computed(prepared)
    deferred = wanted.primary_key if prepared.created else ()
    truncate = not prepared.created and ((t.resnapshot and not t.append) or t.plan.table.truncate_before_full_load
                                         or t.redefined is not None)
    method: UpdateMethod = "append" if t.append or prepared.created or truncate else "merge"
    read = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal read
        for batch in read_table(source, t.plan.source_schema, (), batch_rows, parallel):
            if stop():
                raise InterruptedError(f"{t.plan.label}: snapshot stopped")
            read += batch.num_rows
            yield _change_columns(batch, position) if t.append else batch

    marker = StateMarker(job=job, table=t.key, run_id=run_id, state=marker_state(t, position))
    written = write_batches(destination, wanted, [batches()], method=method, key=t.plan.key, truncate=truncate,
                            deferred_key=deferred, marker=lambda: marker, progress=progress).rows_written
    t.snapshot_done(read, written, position)
    return written


def complete_snapshot(t: CdcTable, destination: Destination, position: Position, *, job: str,
                      run_id: str) -> None:
    """A marker-only commit: the snapshot written with a pending marker belongs to ``position``."""
    session = destination.begin_load(t.target(), "append", ())
    try:
        session.commit(StateMarker(job=job, table=t.key, run_id=run_id, state=marker_state(t, position)))
    except BaseException:
        session.abort()
        raise
    t.committed = position


def _with_change_columns(schema: TableSchema) -> TableSchema:
    return TableSchema(schema.table, (*schema.columns, *APPEND_COLUMNS), ())


def _indexed(appended: TableSchema, key: tuple[str, ...]) -> TableSchema:
    """The append table to create: its key columns get an ordinary index (prepare_target's ``append``)."""
    return replace(appended, primary_key=key)


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
    fresh: Sequence[Any] = batch.events  # ColumnarInserts stay column-wise unless a resume skips some
    committed = t.committed
    if committed is not None and fresh and at_or_before(fresh[0].position, committed):
        fresh = [e for e in fresh if not at_or_before(e.position, committed)]
    if not fresh:
        return
    if not t.append:
        fresh = split_key_changes(fresh, tuple(t.plan.table.key or t.plan.source_schema.primary_key))
    names = tuple(batch.schema.column_names)
    target = t.target(batch.schema)
    if names != t.source_columns:  # columns added at the source: add them (dropped ones stay, NULL from now)
        prepare_target(destination, _indexed(_with_change_columns(target), t.plan.key) if t.append else target,
                       create=create, defer_key=False, append=t.append)
        log.info("%s: the source columns changed to %s", t.plan.label, ", ".join(names))
        t.source_columns = names
    marker = StateMarker(job=job, table=t.key, run_id=run_id, state=marker_state(t, batch.position))
    try:
        result = apply_changes(destination, target, replace(batch, events=fresh),
                               method=t.plan.table.update_method, key=t.plan.key, rename=t.plan.table.columns,
                               marker=lambda: marker)
    except DataError as exc:
        raise DataError(f"{_culprit(t, destination, target, replace(batch, events=fresh))}: {exc}") from exc
    t.rows_read += len(fresh)
    t.rows_written += result.upserted + result.deleted + result.appended
    t.committed = batch.position


CULPRIT_TRIES = 200
"""At most this many changes of a refused batch are tried one by one to name the one refused."""


class _DryRun(Exception):
    """Raised instead of the marker: the change's transaction is rolled back (see :func:`_culprit`)."""


def _culprit(t: CdcTable, destination: Destination, target: TableSchema, batch: ChangeBatch) -> str:
    """The change of ``batch`` the destination refuses, as ``the change to row id=7 at <position>``: each is
    written alone in a transaction that is rolled back; the first that fails is named (else every key)."""
    key = tuple(t.plan.table.key or t.plan.source_schema.primary_key)

    def refuse(_: Any = None) -> StateMarker:
        raise _DryRun

    for event in batch.events[:CULPRIT_TRIES]:
        try:
            apply_changes(destination, target, replace(batch, events=[event]), method=t.plan.table.update_method,
                          key=t.plan.key, rename=t.plan.table.columns, marker=refuse)
        except _DryRun:
            continue
        except DataError:
            return f"the change ({event.op}) to row {_row(event, key)} at {json.dumps(dict(event.position))}"
    rows = ", ".join(_row(e, key) for e in batch.events[:20])
    more = f" and {len(batch.events) - 20} more" if len(batch.events) > 20 else ""
    return f"one of the changes to rows {rows}{more}"


def _row(event: Any, key: tuple[str, ...]) -> str:
    image = event.after if event.after is not None else event.before
    if image is None:
        return "(all: truncate)"
    names = key or tuple(image)
    return " ".join(f"{k}={image.get(k)!r}" for k in names)
