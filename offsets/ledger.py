"""The position ledger: where each table of one job in one destination stands.

One reconcile, one save and one reset, for every kind of position (a watermark, a file set's mark, a change
log position):

- the destination's marker, committed in the same transaction as the data (``_copyjob_state``), is the
  truth: a table whose destination table or marker is missing is copied in full (or snapshotted), never
  continued from a position that belongs to another destination or to a table that is gone;
- ``reset`` stamps the table (``reset_at``, a run id); a marker committed before the stamp no longer counts;
- the marker also records the table's **definition** (what decides which rows a run reads and how they land,
  built by the application from the job file); an edit of the job file that changes it (e.g. another
  incremental column) makes the table start over, with the change as the reason (:func:`definition_change`);
- the state store keeps a copy of each table's position for ``status``, under the job's scope (the job's name
  and its destination's identity, :mod:`copyjob.core.scope`), so two environments never share a row.

Positions that live only in the state store (the capture side of ``transport: kafka``, whose destination is a
topic) are read with :meth:`Ledger.load_defined`; they are scoped the same way. There the destination is
downstream of a topic, so a table published again from its beginning gets a new **epoch** (:data:`EPOCH_KEY`,
saved with its state): its events carry it from then on, and the apply side empties the destination table
once at the first event of a newer epoch and skips events of an older one (``copyjob.apply.kafka_apply``).
The ledger decides it for every such case: an edit, a ``reset`` (except a change table, cdc under append,
which keeps its history), a lost change stream (:meth:`Ledger.stream_lost`), and the attempt after one that
began publishing the table from its beginning and failed before its commit (:data:`OPENED_KEY`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from copyjob.core.contracts import Destination, StateMarker, StateStore, TableState
from copyjob.core.schema import TableName
from copyjob.core.values import decode_value

log = logging.getLogger("copyjob.offsets")
STREAM_KEY = "stream_position"
"""The job's change-stream position the ledger saved last (before the capture acknowledged it)."""
DEFINITION_KEY = "definition"
"""Where a marker's state, and the state store's copy (``TableState.extra``), keep the table's definition."""

EPOCH_KEY = "epoch"
"""Where a state (``TableState.extra``) and the apply side's markers keep the table's epoch: "" at first, a new,
larger one each time a table with its positions in the state store is published again from its beginning."""

OPENED_KEY = "opened"
"""In a state kept only in the store: a capture began publishing the table from its beginning (its first
capture, or under a new epoch) and has not committed since, so its events may be on the topic. Saved before
the first event; the next attempt then publishes under a new epoch and the apply side drops what the failed
one left, instead of holding rows twice or keeping rows deleted meanwhile."""

Definition = Mapping[str, Any]
"""A table's definition: JSON values by field name (see ``copyjob.core.plan.TableJob.definition``)."""

_FIELDS = {"source": "source table", "mode": "mode", "incremental_column": "incremental column",
           "key": "key", "update_method": "update method", "target": "target table",
           "columns": "column mapping", "pattern": "file pattern", "format": "file format"}
"""The fields that invalidate a table's position, in the order a reason names them."""


def definition_change(recorded: Definition | None, current: Definition | None) -> str | None:
    """Why a table built under ``recorded`` must start over under ``current`` ("incremental column changed:
    ts → seq"), or None. A definition not recorded (a marker from before definitions) counts as unchanged, so
    does a field only one side knows; fields outside :data:`_FIELDS` (batch sizes, schedules…) never count."""
    if not recorded or not current:
        return None
    changes = [f"{label} changed: {_shown(recorded[name])} → {_shown(current[name])}"
               for name, label in _FIELDS.items()
               if name in recorded and name in current and recorded[name] != current[name]]
    return "; ".join(changes) or None


def moved_target(states: Mapping[str, TableState], definition: Definition, targets: Collection[str]) -> str | None:
    """The change when a table without state of its own was built before under another target: a state of
    ``states`` (by target) for the same source, whose target the job no longer has (``targets``)."""
    for name, state in states.items():
        recorded = state.extra.get(DEFINITION_KEY)
        if name in targets or not recorded or not state.extra.get("committed_run_id"):
            continue
        if recorded.get("source") == definition.get("source") and recorded.get("target") != definition.get("target"):
            return definition_change(recorded, definition)
    return None


def _replaced_by_reset(definition: Definition) -> bool:
    """A reset (``needs_full`` saved after a commit) replaces what the destination holds, as an edit does,
    except for a change table (cdc under append), which keeps its history and adds the new snapshot's rows, as
    it does without Kafka."""
    return not (definition.get("mode") == "cdc" and definition.get("update_method") == "append")


def committed_by(state: TableState, run_id: str) -> None:
    """``run_id`` committed the table's position: what it published counts (no longer :data:`OPENED_KEY`)."""
    state.extra["committed_run_id"] = run_id
    state.extra.pop(OPENED_KEY, None)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


@dataclass
class Standing:
    """Where a table stands before a run: its stored state, and the destination's marker when it counts."""

    state: TableState
    marker: StateMarker | None
    found: StateMarker | None = None
    """The destination's marker as read, whether it counts or not."""
    full_reason: str | None = None
    """Why the table starts over (a full copy or a snapshot), or None when it continues from ``marker``."""
    redefined: bool = False
    """It starts over because the job file changed its definition: what the destination holds was built
    under another one, so the copy replaces it (emptied, or created again when its shape no longer fits:
    ``copyjob.apply.target.prepare_target``)."""
    edit: str | None = None
    """Why an edit of the job file makes it start over, for the run's summary: its definition changed, or the
    table moved to a new target (then nothing is replaced: the new target is another table)."""

    @property
    def continues(self) -> bool:
        return self.marker is not None


class Ledger:
    """The positions of one job's tables in one destination (one scope of the state store)."""

    def __init__(self, store: StateStore, scope: str, job: str, targets: Collection[str] = ()) -> None:
        self.store = store
        self.scope = scope
        self.job = job
        """The job's name, as the destination's markers know it."""
        self.targets = frozenset(targets)
        """The job's tables, by target: a first run of a table whose source the job copied before to a target
        it no longer has is a moved target (:func:`moved_target`)."""

    # ------------------------------------------------------------ reading

    def load(self, table: str) -> TableState:
        return self.store.load(self.scope, table)

    def load_all(self) -> dict[str, TableState]:
        return self.store.load_all(self.scope)

    def reconcile(self, table: str, destination: Destination, target: TableName,
                  mode: str | None = None, definition: Definition | None = None) -> Standing:
        """The table's standing: the store's row, brought up to the destination's marker (the truth).

        ``mode``: the marker must have been written by this kind of copy (``cdc`` markers hold log positions,
        the others watermarks); a marker of another kind counts as none. ``definition``: the table's current
        definition; a marker recorded under another one counts as none (:func:`definition_change`)."""
        state = self.load(table)
        if definition is not None:  # saved with the state at the next commit (the copy ``status`` compares)
            state.extra[DEFINITION_KEY] = dict(definition)
        marker = destination.read_marker(self.job, table)
        # an edit outranks the other reasons (e.g. a cdc marker under a polled copy after a mode edit): it names
        # the change, and what the destination holds is replaced
        reason = definition_change(marker.state.get(DEFINITION_KEY), definition) if marker is not None else None
        redefined = reason is not None
        reason = reason or self._why_not(state, marker, mode)
        if reason is None and destination.reflect(target) is None:
            reason = "the destination table is missing"
        if reason is not None:
            edit = reason if redefined else self._moved(table, reason, definition)
            if marker is not None or state.extra.get("committed_run_id") or edit:
                log.warning("%s: %s: copying it in full", table, edit or reason)
            state.needs_full = True  # in memory: the consumers of the state plan a full copy from it
            return Standing(state=state, marker=None, found=marker, full_reason=edit or reason,
                            redefined=redefined, edit=edit)
        assert marker is not None
        if marker.run_id != state.extra.get("committed_run_id"):
            log.info("%s: taking the position committed with the data by run %s", table, marker.run_id)
        self._adopt(state, marker)
        return Standing(state=state, marker=marker, found=marker)

    def _moved(self, table: str, reason: str, definition: Definition | None) -> str | None:
        """The target change when ``table`` starts for the first time because the job file moved it."""
        if reason != "first run" or definition is None:
            return None
        return moved_target(self.load_all(), definition, self.targets | {table})

    @staticmethod
    def _why_not(state: TableState, marker: StateMarker | None, mode: str | None) -> str | None:
        if marker is None:
            return "first run" if not state.extra.get("committed_run_id") else \
                "the destination holds no marker of this job for it"
        if marker.run_id <= str(state.extra.get("reset_at") or ""):
            return "reset"
        kind = marker.state.get("mode")
        if mode is not None and (kind == "cdc") != (mode == "cdc"):
            return f"its marker was written by a {kind} copy"
        if kind == "cdc" and marker.state.get("snapshot") != "completed":
            return "its snapshot did not finish"
        return None

    def load_defined(self, table: str, definition: Definition) -> tuple[TableState, str | None]:
        """A table whose position lives only in the state store (the capture side of ``transport: kafka``):
        its state, and why it starts over when the job file changed its definition since its last commit, or
        moved it to a new target (then ``needs_full`` is set in memory and the table gets a new epoch). A table
        reset since its last commit gets a new epoch too (its reason stays None: the run is full because of the
        reset), so the apply side replaces what it holds instead of adding the rows again; so does a table whose
        earlier capture began publishing it from its beginning and never committed (:data:`OPENED_KEY`). The
        state carries the current definition and epoch, saved with the next commit."""
        state = self.load(table)
        published = bool(state.extra.get("committed_run_id"))
        if published:
            reason = definition_change(state.extra.get(DEFINITION_KEY), definition)
        else:
            reason = self._moved(table, "first run", definition)
        if reason is not None:
            log.warning("%s: %s: copying it in full", table, reason)
            state.needs_full = True
        state.extra[DEFINITION_KEY] = dict(definition)
        replaced = reason is not None or (published and state.needs_full and _replaced_by_reset(definition))
        self._open(table, state, replaced=replaced, first=not published)
        return state, reason

    def stream_lost(self, table: str, state: TableState, definition: Definition) -> None:
        """The change stream that ``state``'s position (kept only in the store) belongs to is gone (PostgreSQL:
        the job's replication slot was dropped): the table is snapshotted again, as after a reset, under a new
        epoch (except a change table, cdc under append, which keeps its history). Saved now, before the
        snapshot publishes anything: a capture that dies in it snapshots again instead of streaming from a
        position of the lost stream."""
        state.needs_full = True
        state.extra.pop("cdc_position", None)
        self._open(table, state, replaced=_replaced_by_reset(definition), first=False)
        self.save(state)

    def _open(self, table: str, state: TableState, *, replaced: bool, first: bool) -> None:
        """This attempt's epoch (in ``state``, saved with its commit): a new one when what the apply side holds
        is replaced, or when an earlier attempt began publishing the table from its beginning and never
        committed (its events may be on the topic). An attempt that begins publishing from the beginning (the
        first capture, a new epoch) records it in the store now, before its first event."""
        retried = bool(state.extra.get(OPENED_KEY))
        if replaced or retried:
            # unique per attempt: a capture that fails before its commit starts the next one over again
            state.extra[EPOCH_KEY] = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
            state.needs_full = True
        if not (replaced or retried or first):
            return
        state.extra[OPENED_KEY] = True
        if not retried:  # the flag alone: the rest of ``state`` is saved with the commit
            stored = self.load(table)
            stored.extra[OPENED_KEY] = True
            self.save(stored)

    def _adopt(self, state: TableState, marker: StateMarker) -> None:
        m = marker.state
        if m.get("mode") != "cdc":
            state.watermark = decode_value(m.get("watermark"), m.get("watermark_type"))
            state.watermark_type = m.get("watermark_type")
        state.needs_full = False
        state.extra.update(m.get("extra") or {})  # e.g. a file set's mark and quarantined files
        state.extra["committed_run_id"] = marker.run_id

    # ------------------------------------------------------------ writing

    def save(self, state: TableState) -> None:
        """Step 2 of the commit order (:mod:`copyjob.engine.checkpoint`): after the data is durable."""
        self.store.save(self.scope, state)

    def committed(self, state: TableState, run_id: str, *, watermark: Any = None,
                  watermark_type: str | None = None) -> None:
        """Record a table's successful commit by ``run_id`` and save it."""
        state.watermark = watermark
        state.watermark_type = watermark_type
        state.needs_full = False
        state.last_run_id = run_id
        state.last_run_at = datetime.now(UTC)
        state.last_status = "ok"
        state.last_error = None
        committed_by(state, run_id)
        state.extra.pop("full_reason", None)
        self.save(state)

    def failed(self, table: str, run_id: str, error: str) -> None:
        """Record a table's failed run; its position stays where it was."""
        state = self.load(table)
        state.last_run_id = run_id
        state.last_run_at = datetime.now(UTC)
        state.last_status = "failed"
        state.last_error = error
        self.save(state)

    def reset(self, tables: Sequence[str], stamp: str) -> list[str]:
        """The next run of ``tables`` starts over (full copy, or a new snapshot for CDC): markers committed
        before ``stamp`` (a run id) no longer count; a position kept only in the store gets a new epoch at its
        next capture (:meth:`load_defined`)."""
        for name in tables:
            state = self.load(name)
            state.needs_full = True
            state.watermark = None
            state.watermark_type = None
            state.extra.pop("cdc_position", None)
            state.extra["reset_at"] = stamp
            self.save(state)
        return list(tables)

    # ------------------------------------------------------------ the change stream

    def recorded(self) -> str | None:
        """Where the job last confirmed its change stream to the source (:class:`StreamPositions`), or None."""
        return self.store.get_meta(self.scope, STREAM_KEY)

    def record(self, position: str) -> None:
        """Called before the source is told ``position``: step 2 before step 3, for the stream itself."""
        self.store.set_meta(self.scope, STREAM_KEY, position)
