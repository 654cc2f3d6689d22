"""Applying change batches: fold per key, then write upserts and deletes in one transaction.

Under **merge** the last change of each key in the batch wins: an insert/update/snapshot row becomes an
upsert of its ``after`` image, a delete removes the key; a truncate empties the table first (the batch is
split at it). Inserts held column-wise (:class:`~copyjob.core.changes.ColumnarInserts`) with one row per key
and the destination's Arrow types are written as they are, without a Python row each. Under **append** every
change is written as a row of its own, with the change columns
:data:`APPEND_COLUMNS` added (operation, source position as JSON, source commit time).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from copyjob.core.changes import UNCHANGED_TOAST, ChangeBatch, ChangeEvent, ColumnarInserts
from copyjob.core.contracts import Destination, LoadSession, StateMarker, UpdateMethod
from copyjob.core.schema import Column, LogicalType, TableSchema

if TYPE_CHECKING:
    import pyarrow as pa

APPEND_COLUMNS = (
    Column("_op", LogicalType("string", length=1)),
    Column("_position", LogicalType("string")),
    Column("_commit_ts", LogicalType("timestamptz")),
)
"""Extra columns of an append destination fed by changes: ``_op`` (r/c/u/d), ``_position`` (the source
position as JSON) and ``_commit_ts`` (source commit time, UTC)."""


@dataclass(frozen=True)
class Folded:
    upserts: list[dict[str, Any]]
    deletes: list[dict[str, Any]]
    truncate: bool = False


def fold(events: Sequence[ChangeEvent], key: Sequence[str]) -> Folded:
    """The net effect of ``events`` per key, in the order keys last changed.

    Unchanged-TOAST placeholders take the value of an earlier image of the same key within the batch when
    there is one; otherwise they stay and :func:`split_unchanged` writes those rows apart.
    """
    last: dict[tuple[Any, ...], ChangeEvent] = {}
    truncate = False
    single = key[0] if len(key) == 1 else None  # the common case, without a generator per event
    for event in events:
        if event.op == "t":
            last.clear()
            truncate = True
            continue
        row = event.row
        if row is None:
            continue
        k = (row.get(single),) if single is not None else tuple(row.get(c) for c in key)
        if event.op != "d" and event.after is not None and k in last:
            event = _fill_unchanged(event, last[k])
        last.pop(k, None)  # re-insert so dict order is the order of last change
        last[k] = event
    upserts = [dict(e.after) for e in last.values() if e.op != "d" and e.after is not None]
    deletes = [{c: e.row.get(c) for c in key} for e in last.values() if e.op == "d" and e.row is not None]
    return Folded(upserts=upserts, deletes=deletes, truncate=truncate)


def _fill_unchanged(event: ChangeEvent, previous: ChangeEvent) -> ChangeEvent:
    after = event.after or {}
    if UNCHANGED_TOAST not in after.values() or previous.after is None:
        return event
    filled = {c: (previous.after.get(c, v) if v is UNCHANGED_TOAST else v) for c, v in after.items()}
    return ChangeEvent(event.op, event.before, filled, event.position, event.ts_ms, event.snapshot)


def rows_to_batch(rows: Sequence[dict[str, Any]], schema: TableSchema,
                  rename: dict[str, str] | None = None) -> pa.RecordBatch:
    """Python row images (source names) → one Arrow batch in ``schema`` (destination names)."""
    import pyarrow as pa

    rename = rename or {}
    inverse = {v: k for k, v in rename.items()}
    arrow_schema = schema.arrow_schema()
    arrays = []
    for col, field in zip(schema.columns, arrow_schema, strict=True):
        src = inverse.get(col.name, col.name)
        arrays.append(pa.array([r.get(src) for r in rows], type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema)


def inserts_as_target(run: ColumnarInserts, target: TableSchema, rename: dict[str, str],
                      key: Sequence[str]) -> pa.RecordBatch | None:
    """The inserts of ``run`` as the upserts :func:`fold` would make of them, in ``target`` (destination names),
    straight from their columns; None when that is not exact: a key that comes twice (the last one wins, a
    fold's work), or a column whose Arrow type is not the destination's (Python values convert, see
    :func:`rows_to_batch`)."""
    import pyarrow as pa

    inverse = {v: k for k, v in rename.items()}
    rows, n = run.rows, len(run)
    arrow_schema = target.arrow_schema()
    arrays = []
    for col, field in zip(target.columns, arrow_schema, strict=True):
        index = rows.schema.get_field_index(inverse.get(col.name, col.name))
        if index < 0:
            arrays.append(pa.nulls(n, field.type))  # a column the images do not carry: NULL, as a fold writes it
            continue
        if rows.column(index).type != field.type:
            return None
        arrays.append(rows.column(index))
    source_key = [inverse.get(k, k) for k in key]
    if not key or any(rows.schema.get_field_index(k) < 0 for k in source_key):
        return None
    if n > 1 and pa.table(rows.select(source_key)).group_by(source_key).aggregate([]).num_rows != n:
        return None
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema)


def split_unchanged(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[tuple[str, ...],
                                                                                      list[dict[str, Any]]]]:
    """Rows without placeholders, and rows with placeholders grouped by the columns they do carry."""
    whole: list[dict[str, Any]] = []
    partial: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if UNCHANGED_TOAST in r.values():  # compares by identity first: values never equal the placeholder
            present = tuple(c for c, v in r.items() if v is not UNCHANGED_TOAST)
            partial.setdefault(present, []).append({c: r[c] for c in present})
        else:
            whole.append(r)
    return whole, partial


def append_rows(events: Sequence[ChangeEvent]) -> Iterator[dict[str, Any]]:
    """Each change as a row with its change columns (deletes carry the before image; a truncate is recorded
    as a row whose data columns are all NULL)."""
    for e in events:
        image = e.after if e.op != "d" else e.before
        if image is None:
            if e.op != "t":
                continue
            image = {}
        row = {c: (None if v is UNCHANGED_TOAST else v) for c, v in image.items()}
        row["_op"] = e.op
        row["_position"] = json.dumps(dict(e.position), sort_keys=True, default=str)
        row["_commit_ts"] = datetime.fromtimestamp(e.ts_ms / 1000, tz=UTC) if e.ts_ms else None
        yield row


@dataclass(frozen=True)
class ApplyResult:
    upserted: int = 0
    deleted: int = 0
    appended: int = 0
    truncated: bool = False


def apply_changes(destination: Destination, target: TableSchema, batch: ChangeBatch, *, method: UpdateMethod,
                  key: Sequence[str], rename: dict[str, str], marker: Callable[[], StateMarker | None],
                  truncate: bool = False) -> ApplyResult:
    """Write one change batch in one destination transaction, with its marker.

    Steps:
    1. open the load (``truncate``, or a truncate in the batch under merge, empties the table inside the
       transaction);
    2. merge: delete the keys whose last change is a delete, upsert the rest (rows whose TOASTed values did
       not change are updated column-wise so those values are kept); append: write every change as a row;
    3. commit data and marker together; on error roll back everything.
    """
    if method == "append":
        schema = TableSchema(target.table, (*target.columns, *APPEND_COLUMNS), ())
        rows = list(append_rows(batch.events))
        session = destination.begin_load(schema, "append", (), truncate=truncate)
        return _finish(session, marker, lambda: ApplyResult(appended=session.write(
            rows_to_batch(rows, schema, rename)) if rows else 0))
    if isinstance(batch.events, ColumnarInserts):
        upserts = inserts_as_target(batch.events, target, rename, key)
        if upserts is not None:
            loading = destination.begin_load(target, "merge", key, truncate=truncate)
            return _finish(loading, marker, lambda: ApplyResult(upserted=loading.write(upserts)))
    folded = fold(batch.events, [_source_name(k, rename) for k in key])
    session = destination.begin_load(target, "merge", key, truncate=folded.truncate or truncate)

    def body() -> ApplyResult:
        deleted = 0
        if folded.deletes:
            key_schema = target.select(list(key))
            deleted = session.delete_keys(rows_to_batch(folded.deletes, key_schema, rename))
        whole, partial = split_unchanged(folded.upserts)
        upserted = session.write(rows_to_batch(whole, target, rename)) if whole else 0
        for present, rows in partial.items():
            names = [rename.get(c, c) for c in present]
            upserted += session.update_columns(rows_to_batch(rows, target.select(names), rename))
        return ApplyResult(upserted=upserted, deleted=deleted, truncated=folded.truncate)

    return _finish(session, marker, body)


def _finish(session: LoadSession, marker: Callable[[], StateMarker | None],
            body: Callable[[], ApplyResult]) -> ApplyResult:
    try:
        result = body()
        session.commit(marker())
    except BaseException:
        session.abort()
        raise
    return result


def _source_name(column: str, rename: dict[str, str]) -> str:
    inverse = {v: k for k, v in rename.items()}
    return inverse.get(column, column)
