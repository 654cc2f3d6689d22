"""Verify one table of a job (:func:`verify_table`): each side's digests (inside its database, or over files
read by :mod:`copyjob.verify.files`), compare, re-check a busy CDC table, repair on request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, cast

from copyjob.core.contracts import (
    Bound,
    Destination,
    FileSetSource,
    RowDigests,
    RowFilter,
    Source,
    SupportsDigests,
    SupportsSnapshotReads,
)
from copyjob.core.errors import ConfigurationError
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableSchema
from copyjob.core.values import decode_value
from copyjob.verify.bisect import Comparison, Findings, Row, Side, Tuning, differing_columns, recheck
from copyjob.verify.canonical import ColumnPlan, column_plan, integer_key, same_native_types
from copyjob.verify.files import FileRows, file_set_plan, load_file_set, load_folder, rewrite_outputs
from copyjob.verify.repair import RowSource, repair_keys
from copyjob.verify.report import Difference, TableReport

log = logging.getLogger("copyjob.verify")


@dataclass(frozen=True)
class VerifyOptions:
    repair: bool = False
    settle_s: float = 30.0
    """CDC tables: how long differing keys are re-checked while the change stream catches up."""
    tuning: Tuning = field(default_factory=Tuning)
    lanes: int = 2
    """Connections per side comparing ranges at once."""


Reopen = Callable[[], tuple[Source, Destination]]
"""Another connection to each side (for the lanes beyond the first)."""


def verify_table(plan: TablePlan, job: str, source: Source, destination: Destination,
                 options: VerifyOptions, reopen: Reopen | None = None) -> TableReport:
    started = time.monotonic()
    t = plan.table
    report = TableReport(table=t.target_name, source=t.name, mode=t.mode)
    if t.mode == "cdc" and t.update_method == "append":
        report.notes.append("a cdc table under append keeps every change as a row: not compared")
        return report
    found = destination.reflect(plan.target_schema.table)
    if found is None:
        report.error = "the destination table does not exist (run the job first)"
        return report
    with ExitStack() as files:
        sides = _open_sides(plan, job, source, destination, found, files)
        report.notes.extend(sides.notes)
        if sides.files:
            reopen = None  # rows loaded from files live in this process: one lane
        _verify(sides, job, destination, found, options, reopen, report)
    report.duration_s = time.monotonic() - started
    return report


def _as_is() -> None:
    """Nothing to read again: the side is queried where it lives."""


@dataclass
class _Sides:
    plan: TablePlan
    """The plan as compared (a file set's: with the columns as the destination holds them)."""
    source: RowDigests
    destination: RowDigests
    source_rows: RowSource
    """Where a repair reads the source rows."""
    files: bool = False
    """A side was read from files (or a lakehouse table): its rows live in this process, one lane."""
    file_destination: bool = False
    notes: list[str] = field(default_factory=list)
    rewrite: Rewrite | None = None
    """A file destination fed by a file set: re-copy the files behind the differing keys (source keys,
    destination keys), then read the outputs again; returns notes."""
    refresh: Callable[[], object] = _as_is
    """Read the destination again where verify holds a copy of it (a lakehouse table's snapshot): before a CDC
    re-check and after a repair, which commit newer snapshots."""


Rewrite = Callable[[Sequence[tuple[Any, ...]], Sequence[tuple[Any, ...]]], list[str]]


def _open_sides(plan: TablePlan, job: str, source: Source, destination: Destination, found: TableSchema,
                stack: ExitStack) -> _Sides:
    """Each side's digests: inside its database, or over files read with the copy's readers (verify.files)."""
    notes: list[str] = []
    rewrite: Rewrite | None = None
    source_rows: RowSource
    loaded: FileRows | None = None
    if plan.files is not None:
        plan = file_set_plan(plan, found)
        loaded = load_file_set(plan, cast(FileSetSource, source), destination, job)
        stack.callback(loaded.close)
        src_digests: RowDigests = loaded.digests
        source_rows = loaded
        notes.extend(loaded.notes)
    elif isinstance(source, SupportsDigests):
        src_digests, source_rows = source.digests(), source
    else:
        raise ConfigurationError(f"{plan.label}: this source cannot be verified")
    file_destination = not isinstance(destination, SupportsDigests)
    refresh: Callable[[], object] = _as_is
    if isinstance(destination, SupportsSnapshotReads):  # Delta, Iceberg: the current snapshot, loaded
        from copyjob.connectors._digest_lakehouse import SnapshotDigests

        snapshot = SnapshotDigests(destination, found)
        stack.callback(snapshot.close)
        dst_digests, refresh, file_destination = snapshot, snapshot.refresh, False
        notes.append(snapshot.note)
    elif not file_destination:
        dst_digests = cast(SupportsDigests, destination).digests()
    elif destination.capabilities.files:
        folder = load_folder(destination, found)
        stack.callback(folder.close)
        dst_digests = folder.digests
        notes.extend(folder.notes)
        if loaded is not None:
            rewrite = _rewrite(plan, cast(FileSetSource, source), destination, loaded, folder)
    else:
        raise ConfigurationError(f"{plan.label}: this destination cannot be verified")
    one_lane = plan.files is not None or file_destination or isinstance(destination, SupportsSnapshotReads)
    return _Sides(plan, src_digests, dst_digests, source_rows, one_lane, file_destination, notes, rewrite, refresh)


def _rewrite(plan: TablePlan, source: FileSetSource, destination: Destination, read: FileRows,
             outputs: FileRows) -> Rewrite:
    def rewrite(source_keys: Sequence[tuple[Any, ...]], destination_keys: Sequence[tuple[Any, ...]]) -> list[str]:
        notes = rewrite_outputs(plan, source, destination, read, outputs, source_keys, destination_keys)
        assert outputs.reload is not None
        outputs.reload()
        return notes

    return rewrite


def _verify(sides: _Sides, job: str, destination: Destination, found: TableSchema, options: VerifyOptions,
            reopen: Reopen | None, report: TableReport) -> None:
    plan, src_digests, dst_digests = sides.plan, sides.source, sides.destination
    t = plan.table
    columns = column_plan(plan, found, src_digests, dst_digests)
    native = same_native_types(columns, src_digests, dst_digests)
    if native:
        report.notes.append(f"ranges hashed over the rows' own values ({src_digests.native_hash(columns.source)}, "
                            "same column types)")
    elif columns.in_python:
        report.notes.append("hashed in Python (no canonical SQL for their types): " + ", ".join(columns.in_python))
    src_filters, dst_filters = _watermark_filters(plan, job, destination, columns, report)

    def lane(s: RowDigests, d: RowDigests) -> tuple[Side, Side]:
        if native:
            s, d = s.with_native_hash(), d.with_native_hash()
        return (Side(s, plan.source_schema.table, columns.source, columns.key_source, src_filters),
                Side(d, found.table, columns.destination, columns.key_destination, dst_filters))

    src, dst = lane(src_digests, dst_digests)
    extra: list[tuple[Source, Destination]] = []
    with ExitStack() as stack:
        for _ in range(options.lanes - 1 if columns.key_source else 0):
            if reopen is None:
                break
            pair = reopen()
            stack.callback(pair[1].close)
            stack.callback(pair[0].close)
            extra.append(pair)
        lanes = [(src, dst)] + [lane(cast(SupportsDigests, a).digests(), cast(SupportsDigests, b).digests())
                                for a, b in extra]
        findings = _compare(lanes, columns, options, report)
    if t.mode == "cdc" and _any(findings):
        report.rechecked = _settle(src, dst, columns, findings, options.settle_s, sides.refresh)
    _fill(report, findings, columns)
    if options.repair and _any(findings):
        if sides.file_destination and sides.rewrite is None:
            report.notes.append("not repaired: the outputs of a file destination fed by a database are not tied "
                                "to source rows (copy the table again with mode full)")
        elif sides.rewrite is not None and not columns.key_source:
            report.notes.append("a table without a key cannot be repaired key by key")
        elif sides.rewrite is not None:
            _rewrite_files(sides.rewrite, src, dst, findings, report)
        else:
            _repair(plan, sides.source_rows, destination, found, src, dst, columns, findings, report, sides.refresh)


def _rewrite_files(rewrite: Rewrite, src: Side, dst: Side, f: Findings, report: TableReport) -> None:
    source_keys = [r[0] for r in f.only_source.values()] + [a[0] for a, _ in f.different.values()]
    destination_keys = [r[0] for r in f.only_destination.values()] + [b[0] for _, b in f.different.values()]
    report.notes.extend(rewrite(source_keys, destination_keys))
    report.repaired = len(f.only_source) + len(f.only_destination) + len(f.different)
    keys = [(r[0], None) for r in f.only_source.values()] + [(None, r[0]) for r in f.only_destination.values()] \
        + [(a[0], b[0]) for a, b in f.different.values()]
    left = [ab for ab in recheck(src, dst, keys) if not _same(*ab)]
    if left:
        report.notes.append(f"{len(left)} keys still differ after the files were copied again")
    else:
        report.repair_verified = True


def _compare(lanes: list[tuple[Side, Side]], columns: ColumnPlan, options: VerifyOptions,
             report: TableReport) -> Findings:
    with ThreadPoolExecutor(2 * len(lanes), thread_name_prefix="verify") as pool:
        comparison = Comparison(lanes, columns.key_positions(), options.tuning, pool)
        if not columns.key_source:
            report.notes.append("no key: compared by row counts and one whole-table hash; differing rows "
                                "cannot be named or repaired")
            return comparison.without_key()
        if integer_key(columns):
            return comparison.by_value()
        return comparison.by_sample()


def _watermark_filters(plan: TablePlan, job: str, destination: Destination, columns: ColumnPlan,
                       report: TableReport) -> tuple[tuple[RowFilter, ...], tuple[RowFilter, ...]]:
    """Incremental tables: the rows up to the committed watermark (the marker committed with the data)."""
    t = plan.table
    if t.mode != "incremental" or t.incremental_column is None:
        return (), ()
    marker = destination.read_marker(job, plan.state_key)
    state = marker.state if marker is not None else {}
    if state.get("watermark") is None:
        report.notes.append("no committed watermark yet: every row compared")
        return (), ()
    watermark = decode_value(state["watermark"], state.get("watermark_type"))
    renames = dict(zip(plan.source_schema.column_names, plan.target_schema.column_names, strict=True))
    column = t.incremental_column
    report.notes.append(f"compared up to the committed watermark {column} <= {watermark}")
    bound = Bound(watermark, True)
    return (RowFilter(column, upper=bound),), (RowFilter(renames.get(column, column), upper=bound),)


def _any(f: Findings) -> bool:
    return bool(f.only_source or f.only_destination or f.different)


def _settle(src: Side, dst: Side, columns: ColumnPlan, f: Findings, settle_s: float,
            refresh: Callable[[], object]) -> int:
    """Re-check the differing keys of a cdc table until they agree or ``settle_s`` passes: a busy source changes
    rows after they were read, and the stream brings them over shortly after. Once they agree, both sides are
    counted again (until the counts agree too, within ``settle_s``): the first counts were taken before the
    keys inserted or deleted meanwhile came over. Returns the keys re-checked."""
    pending = _pending(f)
    rechecked = len(pending)
    deadline = time.monotonic() + settle_s
    # a warning: verify waits here, and the keys stay reported unless the stream brings them over
    log.warning("%s: %d key(s) differ; re-checking them for up to %g s while the stream catches up", dst.table,
                rechecked, settle_s)
    pause = threading.Event()
    while True:
        refresh()
        if pending:
            now = recheck(src, dst, [(_raw(a), _raw(b)) for a, b in pending.values()])
            pending = {k: ab for k, ab in zip(pending, now, strict=True) if not _same(ab[0], ab[1])}
        if not pending:
            f.rows_source, f.rows_destination = _count(src), _count(dst)
        if (not pending and f.rows_source == f.rows_destination) or time.monotonic() >= deadline:
            break
        pause.wait(0.5)
    f.only_source, f.only_destination, f.different = {}, {}, {}
    for k, (a, b) in pending.items():
        if a is None and b is not None:
            f.only_destination[k] = b
        elif b is None and a is not None:
            f.only_source[k] = a
        elif a is not None and b is not None:
            f.different[k] = (a, b)
    return rechecked


def _count(side: Side) -> int:
    return side.digests.key_bounds(side.table, side.span())[2]


def _pending(f: Findings) -> dict[Any, tuple[Row | None, Row | None]]:
    out: dict[Any, tuple[Row | None, Row | None]] = {}
    out.update({k: (r, None) for k, r in f.only_source.items()})
    out.update({k: (None, r) for k, r in f.only_destination.items()})
    out.update({k: (a, b) for k, (a, b) in f.different.items()})
    return out


def _raw(row: Row | None) -> tuple[Any, ...] | None:
    return None if row is None else row[0]


def _same(a: Row | None, b: Row | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a[1] == b[1])


def _fill(report: TableReport, f: Findings, columns: ColumnPlan) -> None:
    report.rows_source, report.rows_destination, report.ranges = f.rows_source, f.rows_destination, f.ranges
    report.unkeyed_difference = f.whole_table_differs
    names = columns.names
    report.missing = [_key(columns, r) for _, r in sorted(f.only_source.items(), key=_order)]
    report.extra = [_key(columns, r) for _, r in sorted(f.only_destination.items(), key=_order)]
    report.different = [Difference(_key(columns, a), differing_columns(names, a, b))
                        for _, (a, b) in sorted(f.different.items(), key=_order)]


def _order(item: tuple[tuple[str | None, ...], Any]) -> tuple[Any, ...]:
    return tuple((0, int(v), "") if v is not None and v.lstrip("-").isdigit() else (1, 0, v or "") for v in item[0])


def _key(columns: ColumnPlan, row: Row) -> dict[str, Any]:
    """The key as the report shows it (destination names; integers and strings as they are, others as text)."""
    out: dict[str, Any] = {}
    for name, raw, i in zip(columns.key_destination, row[0], columns.key_positions(), strict=True):
        out[name] = raw if isinstance(raw, int | str) and not isinstance(raw, bool) else row[1][i]
    return out


def _repair(plan: TablePlan, source: RowSource, destination: Destination, found: Any, src: Side, dst: Side,
            columns: ColumnPlan, f: Findings, report: TableReport, refresh: Callable[[], object]) -> None:
    if plan.table.update_method == "append":
        report.notes.append("an append table is reported, not repaired (its rows are not kept one per key)")
        return
    if not columns.key_source:
        report.notes.append("a table without a key cannot be repaired key by key")
        return
    upsert: Sequence[tuple[Any, ...]] = [r[0] for r in f.only_source.values()] + [
        a[0] for a, _ in f.different.values()]
    delete = [r[0] for r in f.only_destination.values()]
    report.repaired = repair_keys(plan, source, destination, found, upsert, delete)
    refresh()
    keys = [(r[0], None) for r in f.only_source.values()] + [(None, r[0]) for r in f.only_destination.values()] \
        + [(a[0], b[0]) for a, b in f.different.values()]
    left = [ab for ab in recheck(src, dst, keys) if not _same(*ab)]
    if left:
        report.notes.append(f"{len(left)} keys still differ after the repair (changed meanwhile?)")
    else:
        report.repair_verified = True
