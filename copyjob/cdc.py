"""The CDC orchestrator: a change capture feeds a sink (direct: the destination; kafka: the tables' topics).

Generic over its log source (:class:`copyjob.core.capture.LogSource`, opened by URL scheme with
:func:`copyjob.ingest.open_log_source`; PostgreSQL: :mod:`copyjob.ingest.postgres_cdc.capture`, MySQL/MariaDB:
:mod:`copyjob.ingest.mysql_cdc.capture`) and over its sink (:class:`CdcSink`). The job's cdc tables share one
change stream and run together. Steps:

1. reconcile each table's position: where the sink keeps it (direct: the destination marker; kafka: the state
   store), unless a reset came later (the sink's ``reconcile``);
2. ``prepare`` the source (PostgreSQL: settings, privileges, replica identity, publication);
3. snapshot: when the stream does not exist yet, or no table has a position, every table without a position
   is snapshotted first, in one snapshot whose result carries the position where streaming starts (the
   handoff); otherwise those tables are snapshotted in a background thread while the others stream;
4. stream: each chunk from ``next_batches`` is handed to the sink table by table (changes at or before the
   table's position are skipped, so a resume inside a transaction applies nothing twice), then the sink
   commits the chunk;
5. only after the chunk committed, ``ack`` the chunk's position to the capture (steps 4–6 of a chunk go through
   :class:`copyjob.core.checkpoint.Checkpoint`, the one commit order) (PostgreSQL then confirms the
   flushed LSN), but never past the position of a table that failed (below). Acks stop while a background
   snapshot runs (afterwards the capture is reopened from the source's confirmed position, now with the new
   tables);
6. save the tables' state in the state store (at most every few seconds, and at the end; with a sink whose
   positions live in the state store, after every commit and before the ack).

Outages. A retriable error of the capture (the source went away: a lost replication connection, a server
shutting down or starting up) closes it, and it is opened again (:func:`copyjob.core.retry.retrying` with an
:class:`~copyjob.core.retry.Outage`: 2, 4, … at most 10 s apart, one log line per attempt) from the source's
acknowledged position, which is never past a table's durable position: the changes handed out but not yet
acknowledged come again and each table skips what its position says it holds (nothing lost, nothing twice).
A retriable error of the sink (the destination went away) tries the same batch again the same way; the
destination sink reconnects and reads the table's marker first, so a commit whose answer was lost is not
applied twice. While it waits every table's state says ``waiting`` (for what, since when, the last error:
``copyjob status``); past ``copy.max_outage`` (default: forever for ``stream``, 5 minutes for ``run``) the
tables fail with an error that names the setting.

A failing table fails alone. A change a table cannot apply (a terminal error, e.g. a value its destination
column refuses) fails that table, with its own error; the other tables go on. Its position stays at its last
durable change, and the acknowledgements to the source stop there (the earliest such position of the failed
tables), so the source keeps its failed change and everything after. The next ``run``/``stream`` reads from
there: the failed table applies from its own position (no new snapshot), the others skip what their
positions say they hold. Fixing the cause (e.g. altering the destination column) and running again is all it
takes.

Where the snapshot and the changes go is a :class:`copyjob.apply.cdc_table.CdcSink`:
:class:`copyjob.apply.destination_sink.DestinationSink` (``transport: direct``) writes each batch in one
destination transaction together with the table's marker; :class:`copyjob.apply.topic_sink.KafkaSink`
publishes the events onto the table's topic, and its commit waits for the broker's
acknowledgement, after which the positions are saved in the state store.

``copyjob run`` (bounded) stops once the capture has handed out everything committed before streaming began
(``current_position`` / ``caught_up``); ``copyjob stream`` goes on until SIGTERM/SIGINT or a failed table.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from copyjob.apply.cdc_table import CdcSink, CdcTable, Position
from copyjob.core import faults
from copyjob.core.capture import LogSource
from copyjob.core.changes import ChangeBatch, op_counts
from copyjob.core.checkpoint import Checkpoint
from copyjob.core.contracts import (
    ChangeCapture,
    SnapshotResult,
    Source,
    TableRunRecord,
)
from copyjob.core.errors import CopyjobError, DataError, error_text, is_retriable
from copyjob.core.plan import TablePlan
from copyjob.core.retry import Outage, OutageTooLong, retrying
from copyjob.core.schema import TableName
from copyjob.core.urls import redact
from copyjob.offsets.ledger import committed_by

if TYPE_CHECKING:
    from copyjob.offsets.ledger import Ledger
    from copyjob.runs import RunContext

log = logging.getLogger("copyjob.cdc")
POLL_S = 0.5
SAVE_EVERY_S = 5.0


def run_cdc(job_run: RunContext, plans: Sequence[TablePlan], source: Source, sink: CdcSink,
            run_id: str, *, until_stopped: bool = False) -> list[TableRunRecord]:
    """Run the job's cdc tables (all of them: they share one stream); one record per table."""
    from copyjob.filesets import endpoint_url
    from copyjob.ingest import open_log_source

    loaded = job_run.loaded
    every = loaded.cdc_tables
    if sorted(p.state_key for p in plans) != sorted(every):
        why = "the cdc tables of a job share one change stream and run together: name all of them or none"
        return [TableRunRecord(table=p.state_key, mode="cdc", status="failed", error=why) for p in plans]
    try:
        options = replace(loaded.job.cdc.as_capture_options(loaded.job.transport),
                          columnar_inserts=sink.takes_columns(plans))
        hooks = open_log_source(endpoint_url(loaded.job.source, loaded.base_dir), loaded.stream_name, options,
                                source, job_run.ledger)
    except CopyjobError as exc:
        return [TableRunRecord(table=p.state_key, mode="cdc", status="failed", error=redact(str(exc)))
                for p in plans]
    try:
        with few_collections():
            return CdcRun(job_run, hooks, list(plans), sink, run_id, until_stopped).run()
    finally:
        hooks.close()


YOUNG_COLLECTION_EVERY = 100_000
_collections_lock = threading.Lock()
_collections: dict[str, Any] = {"users": 0, "before": None}


@contextmanager
def few_collections() -> Iterator[None]:
    """Fewer runs of Python's cyclic garbage collector while changes stream. Decoding allocates a few objects
    per change (row images, events, positions), none of them in a cycle, and the default (a young collection
    every 700 allocations, older ones every 10 of those) cost a quarter of the capture's CPU (measured:
    benchmarks/debezium_bench.py). Process-wide, so the first stream of a process sets it and the last restores."""
    with _collections_lock:
        if not _collections["users"]:
            before = _collections["before"] = gc.get_threshold()
            gc.set_threshold(max(before[0], YOUNG_COLLECTION_EVERY), *before[1:])
        _collections["users"] += 1
    try:
        yield
    finally:
        with _collections_lock:
            _collections["users"] -= 1
            if not _collections["users"]:
                gc.set_threshold(*_collections["before"])


class _Background:
    """A snapshot of tables added to a streaming job, in its own thread with its own sink."""

    def __init__(self, run: CdcRun, tables: list[CdcTable]) -> None:
        self.tables = tables
        self.result: SnapshotResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(run,), name="cdc-snapshot", daemon=True)
        self._thread.start()

    def _main(self, run: CdcRun) -> None:
        try:
            with run.sink.background() as sink:
                self.result = run.snapshot(self.tables, sink)
        except BaseException as exc:  # reported by the streaming thread
            self.error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()


class CdcRun:
    def __init__(self, job_run: RunContext, hooks: LogSource, plans: list[TablePlan], sink: CdcSink,
                 run_id: str, until_stopped: bool) -> None:
        self.job_run = job_run
        self.hooks = hooks
        self.plans = plans
        self.sink = sink
        self.run_id = run_id
        self.until_stopped = until_stopped
        self.ledger = job_run.ledger
        self.settings = job_run.loaded.job.copy_settings
        self.tables: dict[TableName, CdcTable] = {}
        self.background: _Background | None = None
        self.acks_held = False
        """No acknowledgements: a background snapshot runs, or a table failed before its first position."""
        self.apply_failed = False
        self.hold_all = False
        """A failure that leaves no position to acknowledge up to: no acknowledgements for the rest of the run."""
        self.held_at: dict[TableName, Position] = {}
        """The positions of tables that failed to apply a change: acknowledgements stop at the earliest."""
        self.max_outage_s = job_run.loaded.job.copy_settings.max_outage_s(streaming=until_stopped)
        self.fresh_at = 0.0
        self.applied: Counter[str] = Counter()
        self.applied_by_table: dict[str, Counter[str]] = {}
        """Changes applied this run per table, by kind: the run's summary and history."""
        """Changes applied since the stream's line was last told, by kind (``c``, ``u``, ``d``)."""
        """Epoch seconds up to which the destination is known to hold every change (for lag in seconds)."""
        self._saved_at = 0.0
        self.describe: Callable[[Position], str] = hooks.describe

    # ------------------------------------------------------------ the run

    def run(self) -> list[TableRunRecord]:
        started = time.monotonic()
        for plan in self.plans:  # step 1
            t = self.tables[plan.source_schema.table] = self.sink.reconcile(self.ledger, plan)
            t.state.extra.pop("waiting", None)  # left by a stream that was killed while it waited
        forget_abandoned(self.ledger, {p.state_key for p in self.plans}, self.run_id)
        self._fail_gaps()
        try:
            self.hooks.prepare(self.plans)  # step 2
            self._stream(self._initial_snapshot())  # steps 3–6
        except Exception as exc:
            error = error_text(exc)
            status = "skipped" if isinstance(exc, InterruptedError) else "failed"  # stopped during a snapshot
            for t in self.tables.values():
                if t.status == "ok":
                    t.status, t.error = status, error
            if isinstance(exc, OutageTooLong):
                log.error("%s", error)
        for t in self.tables.values():
            t.state.extra.pop("waiting", None)
        self._save(force=True)
        records = [t.record(self.describe, time.monotonic() - started) for t in self.tables.values()]
        for record in records:
            ops = self.applied_by_table.get(record.table, Counter())
            record.changes = {"inserts": ops["c"], "updates": ops["u"], "deletes": ops["d"]}
        return records

    def _fail_gaps(self) -> None:
        """Tables whose changes another process consumed from the stream (a shared slot) fail with a one-line
        error that names ``copyjob reset``: continuing would leave a silent gap."""
        committed = {name: t.committed for name, t in self.tables.items() if t.committed is not None}
        loaded = self.job_run.loaded
        env = f" --env {loaded.env}" if loaded.env else ""
        for name, confirmed in self.hooks.consumed_past(committed).items():
            t = self.tables[name]
            t.status = "failed"
            t.error = (f"{self.hooks.where}: the change stream was confirmed up to {confirmed} by another process, "
                       f"past this table's position {self.describe(t.committed or {})}: the changes in between "
                       f"never reached this destination; run `copyjob reset {loaded.path}{env} --table {t.key}` "
                       "to snapshot it again (and give each environment its own cdc.slot)")
            log.error("%s: %s", t.plan.label, t.error)

    def _initial_snapshot(self) -> list[CdcTable]:
        """Step 3: snapshot now, or return the tables to snapshot in the background."""
        pending = [t for t in self.tables.values() if t.committed is None]
        stream_exists = self.hooks.stream_exists()
        if not stream_exists:
            for t in self.tables.values():
                if t.committed is not None:
                    log.warning("%s: the change stream is gone (%s): snapshotting the table again",
                                t.plan.label, self.hooks.where)
                    t.committed, t.resnapshot = None, True
                    if self.sink.positions_in_store:  # no marker downstream says so: the ledger records it
                        self.ledger.stream_lost(t.key, t.state, t.plan.table.definition)
            pending = list(self.tables.values())
        if pending and (not stream_exists or len(pending) == len(self.tables)):
            self.snapshot(pending, self.sink)
            self._save(force=self.sink.positions_in_store)
            return []
        return pending

    def snapshot(self, tables: list[CdcTable], sink: CdcSink) -> SnapshotResult:
        """One consistent snapshot of ``tables``, each committed on its own with its position."""
        parallel = self.settings.parallel if self.hooks.parallel_snapshot else 1

        def stop() -> bool:
            faults.passed("snapshot-batch")
            return self.job_run.stop.is_set()

        def copy(source: Source, position: Position | None = None) -> int:
            rows = 0
            for t in tables:
                with self.job_run.progress.table(f"{t.plan.label} (snapshot)") as advance:
                    rows += sink.write_snapshot(t, source, position, run_id=self.run_id, parallel=parallel,
                                                progress=advance, stop=stop)
            return rows

        log.info("snapshot of %s", ", ".join(t.plan.label for t in tables))
        result = self.hooks.snapshot(copy)
        for t in tables:
            if t.committed is None:  # the source named the position only after the read
                sink.complete_snapshot(t, result.position, run_id=self.run_id)
        log.info("snapshot done: %s rows; streaming from %s", f"{result.rows:,}", self.describe(result.position))
        return result

    # ------------------------------------------------------------ streaming

    def _stream(self, late: list[CdcTable]) -> None:
        end = None if self.until_stopped else self.hooks.current_position()
        end_taken_at = time.time()
        if late:
            self.background = _Background(self, late)
            self.acks_held = True
        capture = self._open_capture()
        meter = ExitStack()  # stream: a live line on a terminal, a line every 10 s otherwise
        report = meter.enter_context(self.job_run.progress.changes(", ".join(p.label for p in self.plans))
                                     if self.until_stopped else nullcontext(None))
        try:
            while not self.job_run.stop.is_set():
                if self.background is not None and self.background.done():
                    capture = self._after_background(capture)
                try:
                    batches = capture.next_batches(POLL_S)
                except DataError as exc:  # a value the capture cannot read: its table fails alone
                    culprit = self.tables.get(exc.table) if isinstance(exc.table, TableName) else None
                    if culprit is None or culprit.status != "ok":
                        raise
                    capture, batches = self._without(capture, culprit, exc), []
                except Exception as exc:
                    if not is_retriable(exc):
                        raise
                    capture, batches, end = self._reconnect(capture, exc, end)
                if batches:
                    self._apply_chunk(capture, batches)
                self.fresh_at = max(self.fresh_at, capture.caught_up_at or 0.0)
                if report is not None:
                    report(self.applied, round(max(time.time() - self.fresh_at, 0.0), 1) if self.fresh_at else None)
                    self.applied = Counter()
                if end is not None and self.background is None and capture.caught_up(end):
                    self.fresh_at = max(self.fresh_at, end_taken_at)
                    break
                if all(t.status == "failed" for t in self.tables.values()):
                    break  # nothing left to stream
                self._save_copy()
        finally:
            capture.close()
            meter.close()
        if self.background is not None:  # stopped while it ran: it sees the stop between batches
            while not self.background.done():
                time.sleep(0.1)

    def _reconnect(self, capture: ChangeCapture, error: BaseException, end: Position | None,
                   ) -> tuple[ChangeCapture, list[ChangeBatch], Position | None]:
        """The source went away: open the capture again (from the source's acknowledged position) until it
        reads, within ``copy.max_outage``. A bounded run takes the log's end again: the stop point it waited
        for may have been acknowledged before it was handed out."""
        capture.close()
        outage = self._outage("source")
        outage.failed(error)

        def reopen() -> tuple[ChangeCapture, list[ChangeBatch], Position | None]:
            if self.job_run.stop.is_set():
                raise InterruptedError("stopped while waiting for the source")
            fresh = self._open_capture()
            try:
                return fresh, fresh.next_batches(POLL_S), None if end is None else self.hooks.current_position()
            except BaseException:
                fresh.close()
                raise

        return retrying(reopen, "source", outage=outage)

    def _without(self, capture: ChangeCapture, t: CdcTable, error: BaseException) -> ChangeCapture:
        """The capture failed on a change of ``t``: fail it alone and read on without it (from the source's
        acknowledged position, which stays at or before ``t``'s)."""
        capture.close()
        self._fail(t, error)
        return self._open_capture()

    def _outage(self, side: str) -> Outage:
        return Outage(side, self.max_outage_s, waiting=self._waiting, stop=self.job_run.stop)

    def _waiting(self, side: str, since: datetime | None, error: str | None) -> None:
        """What the tables wait for, in the state store for ``copyjob status`` (None: no longer)."""
        for t in self.tables.values():
            if since is None:
                t.state.extra.pop("waiting", None)
            elif t.status == "ok":
                t.state.extra["waiting"] = {"for": side, "since": since.isoformat(), "error": error}
        try:
            self._save(force=True)
        except Exception as exc:  # the state store may be on the server that went away: status shows it later
            log.debug("cannot save the waiting state: %s", error_text(exc))

    def _open_capture(self) -> ChangeCapture:
        """Every table that is not failed: pending ones start where the earliest streaming table does (their
        changes are dropped until their snapshot is done, with acks held)."""
        positions = [t.committed for t in self.tables.values() if t.committed is not None and t.status == "ok"]
        earliest = min(positions, key=_Order(self.hooks.at_or_before)) if positions else None
        starts = {name: (t.committed or earliest) for name, t in self.tables.items()
                  if t.status == "ok" and (t.committed or earliest) is not None}
        return self.hooks.capture(starts)  # type: ignore[arg-type]

    def _after_background(self, capture: ChangeCapture) -> ChangeCapture:
        assert self.background is not None
        background, self.background = self.background, None
        if background.error is not None:
            error = background.error
            text = error_text(error)
            for t in background.tables:
                t.status, t.error = ("skipped" if isinstance(error, InterruptedError) else "failed"), text
        self.acks_held = self.hold_all  # a failed snapshot is simply taken again by the next run
        self._save(force=self.sink.positions_in_store)
        capture.close()  # reopened from the confirmed position, with the new tables
        return self._open_capture()

    def _apply_chunk(self, capture: ChangeCapture, batches: list[ChangeBatch]) -> None:
        """Step 4 for every batch, then step 5 (and 6 first, when the positions live in the state store)."""
        last: Position | None = None
        snapshotting = self.background.tables if self.background is not None else []
        for batch in batches:
            t = self.tables.get(batch.table)
            # a table whose background snapshot runs (or just committed) waits for the reopened capture: the
            # changes dropped until now come again from there
            if t is not None and t.status == "ok" and t.committed is not None and t not in snapshotting:
                self._apply_with_retries(t, batch)
                if t.status == "ok":  # a resume's repeats, skipped by the sink, are counted too
                    ops = op_counts(batch.events)
                    self.applied.update(ops)
                    self.applied_by_table.setdefault(t.plan.state_key, Counter()).update(ops)
            if batch.events and batch.events[-1].ts_ms:
                self.fresh_at = max(self.fresh_at, batch.events[-1].ts_ms / 1000)
            if last is None or not self.hooks.at_or_before(batch.position, last):
                last = batch.position
        checkpoint = Checkpoint(save=(lambda: self._save(force=True)) if self.sink.positions_in_store else None,
                                ack=None if self.acks_held else capture.ack, after_durable="committed")
        try:
            checkpoint.commit(self._commit_sink, self._ack_bound(last))
        except _SinkFailed:
            pass  # the tables are failed and acknowledgements held: nothing more to do for this chunk

    def _ack_bound(self, last: Position | None) -> Position | None:
        """``last``, or the earliest position of a table that failed, when that comes first: the source keeps
        the failed table's changes for the next run."""
        if last is None or not self.held_at:
            return last
        earliest = min(self.held_at.values(), key=_Order(self.hooks.at_or_before))
        return earliest if self.hooks.at_or_before(earliest, last) else last

    def _apply_with_retries(self, t: CdcTable, batch: ChangeBatch) -> None:
        """Step 4 for one table: retriable errors (the destination went away) are tried again within
        ``copy.max_outage``; any other error fails this table alone, at its last durable position."""
        try:
            retrying(lambda: self.sink.apply(t, batch, at_or_before=self.hooks.at_or_before, run_id=self.run_id),
                     t.plan.label, outage=self._outage("destination"))
        except (InterruptedError, OutageTooLong):
            raise  # every table waits for the same destination: the run ends
        except Exception as exc:
            self._fail(t, exc)
            return
        faults.passed("applied")

    def _fail(self, t: CdcTable, exc: BaseException) -> None:
        """``t`` fails alone: the others go on, and acknowledgements stop at its position."""
        t.status, t.error = "failed", error_text(exc)
        self.apply_failed = True
        if t.committed is None:
            self.acks_held = self.hold_all = True
            log.error("%s: %s; no changes are acknowledged any more", t.plan.label, t.error)
        else:
            self.held_at[t.plan.source_schema.table] = t.committed
            log.error("%s: %s; the other tables go on; this table resumes from %s on the next run (the source "
                      "keeps its changes from there)", t.plan.label, t.error, self.describe(t.committed))

    def _commit_sink(self) -> None:
        """Step 1 for the chunk: the sink's commit (direct: each batch committed already as it was applied).
        When it fails, no table moves on and nothing more is acknowledged."""
        try:
            self.sink.commit()
        except Exception as exc:
            error = error_text(exc)
            log.error("the changes could not be committed (%s); they are no longer acknowledged", error)
            for t in self.tables.values():
                if t.status == "ok":
                    t.status, t.error = "failed", error
            self.acks_held = self.apply_failed = self.hold_all = True
            raise _SinkFailed from exc

    def _save_copy(self) -> None:
        """Step 6 between chunks: a state store that is away for a moment (on a server that restarts) is
        written again later; the destination's markers hold the positions."""
        try:
            self._save()
        except Exception as exc:
            if self.sink.positions_in_store or not is_retriable(exc):
                raise
            log.warning("cannot save the tables' state now (%s); trying again later", error_text(exc))

    def _save(self, force: bool = False) -> None:
        """Step 6."""
        now = time.monotonic()
        if not force and now - self._saved_at < SAVE_EVERY_S:
            return
        self._saved_at = now
        for t in self.tables.values():
            save_state(self.ledger, t, self.run_id, self.describe,
                       {"mode": "cdc", "cdc_fresh_at": self.fresh_at})


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


def save_state(ledger: Ledger, t: CdcTable, run_id: str, describe: Callable[[Position], str],
               extra: Mapping[str, Any] | None = None) -> None:
    """A copy of the table's position and status in the state store (step 6)."""
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
        committed_by(s, run_id)
    s.extra.update(extra or {})
    ledger.save(s)


class _SinkFailed(Exception):
    """The sink's commit failed (its tables are marked failed): the checkpoint stops before steps 2 and 3."""


class _Order:
    """A sort key from ``at_or_before``."""

    def __init__(self, at_or_before: Callable[[Position, Position], bool]) -> None:
        self._le = at_or_before

    def __call__(self, position: Position) -> _Key:
        return _Key(position, self._le)


class _Key:
    def __init__(self, position: Position, le: Callable[[Position, Position], bool]) -> None:
        self.position = position
        self._le = le

    def __lt__(self, other: _Key) -> bool:
        return not self._le(other.position, self.position)
