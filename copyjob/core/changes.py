"""Change events: the vocabulary between change capturers (ingest/) and apply consumers (apply/).

A :class:`ChangeEvent` is one row-level change, shaped like a Debezium envelope: ``op`` is ``r`` (a row read
by a snapshot), ``c`` (insert), ``u`` (update), ``d`` (delete) or ``t`` (truncate of the whole table);
``before``/``after`` are the row images (column name → Python value, source column names); ``position`` is
where the change sits in the source (a JSON-safe mapping, e.g. ``{"lsn": 123, "seq": 4}`` or
``{"file": "mysql-bin.000003", "pos": 4567}``), ``ts_ms`` the source commit time in epoch milliseconds.

Events travel in :class:`ChangeBatch` es, one table each, in source order. Capturers produce them, a
transport (direct: in-process; kafka: topics) carries them, and apply folds each batch per key (the last
change of a key wins) before writing it in one destination transaction with its state marker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from copyjob.core.schema import TableName, TableSchema

Op = Literal["r", "c", "u", "d", "t"]
OPS: tuple[str, ...] = ("r", "c", "u", "d", "t")

UNCHANGED_TOAST = object()
"""Stands in ``after`` for a PostgreSQL TOASTed value the update did not change: apply keeps the
destination's value and never writes this placeholder."""


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    op: Op
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    position: Mapping[str, Any] = field(default_factory=dict)
    ts_ms: int = 0
    snapshot: bool = False

    @property
    def row(self) -> Mapping[str, Any] | None:
        """The image that identifies the row: ``after``, or ``before`` for deletes."""
        return self.before if self.op == "d" else self.after


@dataclass(frozen=True)
class ChangeBatch:
    """Consecutive changes of one table, in source order, with the schema their images follow."""

    table: TableName
    schema: TableSchema
    events: Sequence[ChangeEvent]
    position: Mapping[str, Any] = field(default_factory=dict)
    """Where the source stands after the last event of this batch (what a commit may acknowledge)."""

    def __len__(self) -> int:
        return len(self.events)
