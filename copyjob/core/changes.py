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

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, overload

from copyjob.core.schema import TableName, TableSchema

if TYPE_CHECKING:
    import pyarrow as pa

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


def _event_factory() -> Callable[[str, Any, Any, Any, int], ChangeEvent]:
    """``ChangeEvent(op, before, after, position, ts_ms)``, built through its slots: a frozen dataclass's
    ``__init__`` sets each field with ``object.__setattr__``, which costs as much as decoding the row. Falls back
    to the constructor if ChangeEvent ever stops being the slotted six-field class this relies on."""
    names = [f.name for f in fields(ChangeEvent)]
    if names != ["op", "before", "after", "position", "ts_ms", "snapshot"] or "__slots__" not in vars(ChangeEvent):
        return lambda op, before, after, position, ts_ms: ChangeEvent(op, before, after, position, ts_ms)  # type: ignore[arg-type]
    new = object.__new__
    set_op, set_before, set_after, set_position, set_ts, set_snapshot = (
        vars(ChangeEvent)[n].__set__ for n in names)

    def make(op: str, before: Any, after: Any, position: Any, ts_ms: int) -> ChangeEvent:
        event: ChangeEvent = new(ChangeEvent)
        set_op(event, op)
        set_before(event, before)
        set_after(event, after)
        set_position(event, position)
        set_ts(event, ts_ms)
        set_snapshot(event, False)
        return event

    return make


new_event = _event_factory()
"""``new_event(op, before, after, position, ts_ms)``: a :class:`ChangeEvent` (not a snapshot row) built at a
fraction of the constructor's cost, for log readers that make one per change."""


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


class ColumnarInserts(Sequence[ChangeEvent]):
    """A run of inserts of one table held column-wise: what a log reader hands a sink that takes whole columns
    (``CdcSink.takes_columns``: Kafka's avro encoder, the direct destination's merge), without a Python
    object per value.

    ``rows`` holds the ``after`` images (source column names, each column of its logical type's Arrow type);
    ``positions`` one column per position field (every insert has the same fields); ``ts_ms`` the commit time
    of each. It is still a sequence of ``c`` events: indexing builds one, iterating builds them all (once), so
    code that does not know the column-wise form works unchanged, only slower. A producer whose Python values
    are not Arrow's (PostgreSQL: a timestamp past 9999 is an integer) overrides :meth:`image` and
    :meth:`images`."""

    __slots__ = ("_events", "positions", "rows", "ts_ms")

    def __init__(self, rows: pa.RecordBatch, positions: Mapping[str, Sequence[Any]], ts_ms: Sequence[int]) -> None:
        if any(len(v) != rows.num_rows for v in positions.values()) or len(ts_ms) != rows.num_rows:
            raise ValueError("every position field and ts_ms need one value per row")
        self.rows = rows
        self.positions = positions
        self.ts_ms = ts_ms
        self._events: list[ChangeEvent] | None = None

    def __len__(self) -> int:
        return self.rows.num_rows

    @overload
    def __getitem__(self, index: int) -> ChangeEvent: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ChangeEvent]: ...

    def __getitem__(self, index: int | slice) -> ChangeEvent | Sequence[ChangeEvent]:
        if isinstance(index, slice) or self._events is not None:
            return self.events()[index]
        n = len(self)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(index)
        return self._event(i, self.image(i))

    def __iter__(self) -> Iterator[ChangeEvent]:
        return iter(self.events())

    def position(self, index: int) -> dict[str, Any]:
        return {name: values[index] for name, values in self.positions.items()}

    def image(self, index: int) -> dict[str, Any]:
        """The ``after`` image of one insert."""
        row: dict[str, Any] = self.rows.slice(index, 1).to_pylist()[0]
        return row

    def images(self) -> list[dict[str, Any]]:
        """Every ``after`` image, in order."""
        rows: list[dict[str, Any]] = self.rows.to_pylist()
        return rows

    def events(self) -> list[ChangeEvent]:
        """Every insert as a :class:`ChangeEvent` (built once)."""
        if self._events is None:
            self._events = [self._event(i, row) for i, row in enumerate(self.images())]
        return self._events

    def _event(self, i: int, row: dict[str, Any]) -> ChangeEvent:
        return new_event("c", None, row, self.position(i), self.ts_ms[i])


def op_counts(events: Sequence[ChangeEvent]) -> Counter[str]:
    """How many events of each op (without building the events of :class:`ColumnarInserts`)."""
    if isinstance(events, ColumnarInserts):
        return Counter({"c": len(events)}) if len(events) else Counter()
    return Counter(e.op for e in events)
