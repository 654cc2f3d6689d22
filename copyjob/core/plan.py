"""A table of a job as the stages see it: what to copy and how (:class:`TableJob`, the job file's entry with
its defaults applied), and the same table checked against its source (:class:`TablePlan`).

The application builds both from the job file (``copyjob.preflight``); captures, snapshots and sinks read
them and never the job file's model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from copyjob.core.contracts import CopyMode, FileInfo, FileSet, UpdateMethod
from copyjob.core.schema import TableSchema


@dataclass(frozen=True)
class TableJob:
    """One table entry of the job, defaults applied."""

    name: str
    """The source table (``schema.table``), or the file set's name."""
    target_name: str
    """The destination table (``target:``, default the source's name)."""
    mode: CopyMode
    update_method: UpdateMethod
    truncate_before_full_load: bool = False
    key: tuple[str, ...] | None = None
    """The key the job file names (source column names); None: the source's primary key."""
    columns: Mapping[str, str] = field(default_factory=dict)
    """Renames, source name → destination name."""
    incremental_column: str | None = None
    index: int = 0
    """Its position under ``tables:`` (for messages that name the job file's line)."""
    definition: Mapping[str, Any] = field(default_factory=dict)
    """What decides which rows a run reads and how they land (source, incremental column, key under merge,
    cdc or polled, update method, target, column mapping, file pattern and format), as JSON values. It is
    committed with each marker; an edit that changes it makes the table start over (``offsets.ledger``).
    Settings that change neither (batch sizes, parallel readers, schedules) are not in it."""


@dataclass(frozen=True)
class TablePlan:
    """One table of the job, checked against its source."""

    table: TableJob
    source_schema: TableSchema
    """The source columns to read (all of them) and the source primary key."""
    target_schema: TableSchema
    """The same columns as named in the destination (rename map applied), with the destination key."""
    key: tuple[str, ...]
    """Merge key, in destination column names."""
    files: FileSet | None = None
    """A file source's set of files (``source_schema`` is then a first look at their columns, when there
    are keys to check; the copy finds the columns file by file)."""
    listed: tuple[FileInfo, ...] = ()
    """The set's files as listed by the check (one listing per run: the copy plans from it)."""

    @property
    def state_key(self) -> str:
        return self.table.target_name

    @property
    def label(self) -> str:
        t = self.table
        return t.name if t.target_name == t.name else f"{t.name} → {t.target_name}"

    @property
    def source_key(self) -> tuple[str, ...]:
        """The key in source column names: the job file's, else the source's primary key."""
        return tuple(self.table.key or self.source_schema.primary_key)
