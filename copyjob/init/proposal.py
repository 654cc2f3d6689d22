"""The choices ``init`` proposes per table: the key, the incremental column, the mode and the update method,
each with the reason it was picked (or why nothing fits), written into the job file as a comment."""

from __future__ import annotations

from dataclasses import dataclass, field

from copyjob.core.contracts import CopyMode, UpdateMethod
from copyjob.init.discovery import FoundTable

_TIME_KINDS = ("timestamptz", "timestamp", "date")
_INT_KINDS = ("int16", "int32", "int64")
_CHANGE_WORDS = ("updated", "modified", "changed", "last_", "_at", "ts")


@dataclass(frozen=True)
class TableProposal:
    table: FoundTable
    mode: CopyMode
    update_method: UpdateMethod
    key: tuple[str, ...] = ()
    """Empty when the primary key is used (the job file need not name it) or there is none."""
    key_reason: str = ""
    incremental_column: str | None = None
    incremental_reason: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


def propose(table: FoundTable, mode: CopyMode, update_method: UpdateMethod | None) -> TableProposal:
    """What to copy ``table`` with, given the mode and update method asked for (None: the natural one)."""
    if table.pattern is not None:
        return _propose_files(table, mode, update_method)
    key, key_reason, named = find_key(table)
    column, column_reason = incremental_column(table)
    notes: list[str] = []
    table_mode = mode
    if mode == "incremental" and column is None:
        table_mode = "full"
        notes.append("no column fits an incremental copy: copied in full every run")
    if mode == "cdc" and not key:
        table_mode = "full"
        notes.append("no key: change capture cannot match changed rows, so it is copied in full (add a primary key "
                     "and set mode: cdc)")
    method = update_method or ("merge" if key else "append" if table_mode == "incremental" else "overwrite")
    if method == "merge" and not key:
        method = "append" if table_mode == "incremental" else "overwrite"
        notes.append(f"no key for merge: update_method {method}")
    return TableProposal(table=table, mode=table_mode, update_method=method, key=key if named else (),
                         key_reason=key_reason, incremental_column=column if table_mode == "incremental" else None,
                         incremental_reason=column_reason, notes=tuple(notes))


def find_key(table: FoundTable) -> tuple[tuple[str, ...], str, bool]:
    """``(columns, why, must be named in the job file)``: the primary key, else a unique index whose columns
    are all NOT NULL (a NULL would match nothing), else none."""
    schema = table.schema
    if schema is None:
        return (), "", False
    if schema.primary_key:
        return schema.primary_key, "primary key", False
    not_null = {c.name for c in schema.columns if not c.nullable}
    for index in table.indexes:
        if index.unique and index.columns and set(index.columns) <= not_null:
            return index.columns, f"unique index {index.name} on NOT NULL columns", True
    return (), "no primary key and no unique index on NOT NULL columns", False


def incremental_column(table: FoundTable) -> tuple[str | None, str]:
    """An indexed timestamp column first (a name saying "updated" before others: it sees updates, a creation
    time only inserts), then an integer the system numbers in increasing order, then an integer primary key."""
    schema = table.schema
    if schema is None:
        return None, ""
    kinds = {c.name: c.type.kind for c in schema.columns}
    leading = [i.columns[0] for i in table.indexes if i.columns]
    times = [c for c in dict.fromkeys(leading) if kinds.get(c) in _TIME_KINDS]
    if times:
        times.sort(key=lambda c: (not any(w in c.lower() for w in _CHANGE_WORDS[:3]),
                                  not any(w in c.lower() for w in _CHANGE_WORDS)))
        return times[0], f"indexed {kinds[times[0]]} column"
    for column in table.increasing:
        if kinds.get(column) in _INT_KINDS:
            return column, "integer the database assigns in increasing order (sees inserts, not updates)"
    if len(schema.primary_key) == 1 and kinds.get(schema.primary_key[0]) in _INT_KINDS:
        return schema.primary_key[0], "integer primary key (sees inserts, not updates, if it only increases)"
    return None, "no indexed timestamp or increasing integer column"


def _propose_files(table: FoundTable, mode: CopyMode, update_method: UpdateMethod | None) -> TableProposal:
    """File sets: incremental copies the files that are new or changed (by modification time); they have no
    key, so merge is not proposed."""
    notes: list[str] = []
    table_mode: CopyMode = mode
    if mode == "cdc":
        table_mode = "incremental"
        notes.append("files have no change log: new and changed files are copied incrementally")
    method = update_method or "append"
    if method == "merge":
        method = "append"
        notes.append("files have no key: update_method append (name key: columns to merge)")
    return TableProposal(table=table, mode=table_mode, update_method=method,
                         incremental_reason="new or changed files (modification time)", notes=tuple(notes))
