"""Running a job once: connect, check every table, then copy table by table.

For each table (see :meth:`JobRun._copy_table`):
1. load its state, and adopt the destination's marker if a crash left it newer than the store;
2. decide full or incremental, and plan the rows to read (ingest.watermark);
3. create or extend the destination table (apply.target);
4. read (snapshot) and write (apply) in one destination transaction that also commits the state marker;
5. only then save the new state in the state store.
A failing table is rolled back, its state left as it was, and the other tables go on.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from copyjob.apply import prepare_target, write_batches, write_binary
from copyjob.core.checkpoint import Checkpoint
from copyjob.core.contracts import (
    Destination,
    RunRecord,
    Source,
    StateMarker,
    StateStore,
    TableRunRecord,
)
from copyjob.core.errors import CopyjobError, error_text
from copyjob.core.plan import TablePlan
from copyjob.core.retry import retrying
from copyjob.core.urls import redact
from copyjob.core.values import encode_value
from copyjob.filesets import endpoint_url
from copyjob.ingest import IncrementPlan, plan_full, plan_incremental
from copyjob.jobfile import ResolvedTable
from copyjob.loader import LoadedJob
from copyjob.logs import bind_log_context, log_context
from copyjob.offsets.ledger import DEFINITION_KEY, Ledger
from copyjob.preflight import check_tables
from copyjob.progress import Progress
from copyjob.runs import new_run_id, select_tables
from copyjob.snapshot import read_binary, read_table

if TYPE_CHECKING:
    import pyarrow as pa

    from copyjob.core.contracts import FileSetSource

log = logging.getLogger("copyjob")


class _BoundaryCount:
    """Rows of an incremental merge whose incremental column equals the previous watermark: read again."""

    def __init__(self, column: str, watermark: Any) -> None:
        self.column = column
        self.watermark = watermark
        self.rows: int | None = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if self.rows is None or self.column not in batch.schema.names:
            self.rows = None
            return
        import pyarrow as pa
        import pyarrow.compute as pc

        values = batch.column(self.column)
        try:
            same = pc.equal(values, pa.scalar(self.watermark, type=values.type))
        except (pa.ArrowException, TypeError, ValueError):  # a type arrow cannot compare: not counted
            self.rows = None
            return
        self.rows += int(pc.sum(same).as_py() or 0)


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the run as Ctrl-C does (KeyboardInterrupt), so that history records it ``interrupted``
    instead of the process vanishing mid-run. Only in the main thread and only when nobody else handles
    SIGTERM (``serve`` and ``stream`` stop gracefully on their own)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def raise_interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class JobRun:
    """One run of a job. ``open_store`` is called only once the job has been checked against its source,
    so a job that does not fit its systems writes nothing anywhere, not even state."""

    loaded: LoadedJob
    open_store: Callable[[], StateStore]
    progress: Progress = field(default_factory=Progress)
    trigger: str = "manual"
    lock_wait_s: float = 3600.0
    """How long to wait for another run of the same job to finish; after that this run is skipped."""
    stop: threading.Event = field(default_factory=threading.Event)
    """Set (e.g. on SIGTERM) to finish the table being copied and skip the rest."""
    cdc_until_stopped: bool = False
    """cdc tables stream until ``stop`` (``copyjob stream``) instead of up to the run's start (``run``)."""
    _store: StateStore | None = None

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = self.open_store()
            self._store.adopt_unscoped(self.loaded.job.job, self.loaded.scope)
        return self._store

    @property
    def ledger(self) -> Ledger:
        """The positions of this job's tables in its destination (the store's rows under the job's scope)."""
        return self.loaded.ledger(self.store)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def run(self, table_names: list[str] | None = None) -> RunRecord:
        """Copy the selected tables once, through the job's transport (copyjob.engine). Raises
        JobFileError/UsageError before writing anything when the job does not fit the systems; otherwise
        returns the run record (tables may have failed)."""
        from copyjob import engine

        with interrupt_on_sigterm(), log_context(job=self.loaded.job.job):
            return engine.run(self, table_names)

    def stream(self, table_names: list[str] | None = None, poll_interval_s: float = 0.5) -> RunRecord:
        """Copy until :attr:`stop` is set, through the job's transport (copyjob.engine)."""
        from copyjob import engine

        with interrupt_on_sigterm(), log_context(job=self.loaded.job.job):
            return engine.stream(self, table_names, poll_interval_s)

    def run_direct(self, table_names: list[str] | None = None) -> RunRecord:
        """``transport: direct``: one process reads and writes, table by table, then the cdc tables together."""
        from copyjob.connectors import destination_capabilities, open_destination, open_source

        job = self.loaded.job
        tables = select_tables(self.loaded, table_names)
        run = RunRecord(run_id=new_run_id(), job=self.loaded.scope, started_at=datetime.now(UTC),
                        trigger=self.trigger)
        bind_log_context(run_id=run.run_id)
        base = self.loaded.base_dir
        destination_url = endpoint_url(job.destination, base)
        try:
            source = open_source(endpoint_url(job.source, base))
        except CopyjobError as exc:
            return self.fail_all(run, tables, f"source: {exc}")
        try:
            plans = check_tables(self.loaded, tables, source, destination_capabilities(destination_url))
            lock = self.store.acquire_lock(self.loaded.scope, f"run {run.run_id} ({self.trigger})",
                                           wait_s=self.lock_wait_s)
            if lock is None:
                return self.skip(run, tables)
            with lock:
                try:
                    destination = open_destination(destination_url)
                except CopyjobError as exc:
                    return self.fail_all(run, tables, f"destination: {exc}")
                try:
                    self.store.start_run(run)
                    for plan in plans:
                        if plan.table.mode == "cdc":
                            continue  # below, together: they share one change stream (copyjob.cdc)
                        if self.stop.is_set():
                            run.tables.append(TableRunRecord(table=plan.state_key, mode=plan.table.mode,
                                                             status="skipped", error="stopped before it started"))
                            continue
                        with log_context(table=plan.state_key):
                            run.tables.append(self._copy_with_retries(plan, source, destination, run.run_id))
                    cdc_plans = [p for p in plans if p.table.mode == "cdc"]
                    if cdc_plans:
                        from copyjob.apply.destination_sink import DestinationSink
                        from copyjob.cdc import run_cdc

                        sink = DestinationSink(job.job, destination, batch_rows=job.copy_settings.batch_rows,
                                               create_tables=job.copy_settings.create_tables,
                                               open_destination=lambda: open_destination(destination_url))
                        try:
                            run.tables.extend(run_cdc(self, cdc_plans, source, sink, run.run_id,
                                                      until_stopped=self.cdc_until_stopped))
                        finally:
                            if sink.destination is not destination:  # reconnected after an outage
                                sink.close()
                except (KeyboardInterrupt, SystemExit):
                    self._record_interrupted(run)
                    raise
                finally:
                    destination.close()
        finally:
            source.close()
        run.finished_at = datetime.now(UTC)
        run.status = "ok" if all(t.status == "ok" for t in run.tables) else "failed"
        if self.stop.is_set() and all(t.status in ("ok", "skipped") for t in run.tables):
            run.status = "stopped"
        self.store.finish_run(run)
        return run

    def _record_interrupted(self, run: RunRecord) -> None:
        """A signal ended the run mid-way: history says ``interrupted``, not ``running`` forever."""
        run.status = "interrupted"
        run.finished_at = datetime.now(UTC)
        try:
            self.store.finish_run(run)
        except Exception as exc:  # the next run marks it interrupted anyway (StateStore.interrupt_orphans)
            log.warning("run %s: could not record it interrupted: %s", run.run_id, redact(str(exc)))

    def skip(self, run: RunRecord, tables: list[ResolvedTable]) -> RunRecord:
        """Another run of this job holds the lock: record a skipped run that says so."""
        holder = self.store.lock_info(run.job)
        why = f"skipped: another run of this job is in progress ({holder.describe() if holder else 'lock held'})"
        run.tables = [TableRunRecord(table=t.spec.target_name, mode=t.mode, status="skipped", error=why)
                      for t in tables]
        run.status = "skipped"
        run.finished_at = datetime.now(UTC)
        self.store.start_run(run)
        self.store.finish_run(run)
        return run

    def fail_all(self, run: RunRecord, tables: list[ResolvedTable], error: str) -> RunRecord:
        error = redact(error)
        run.tables = [TableRunRecord(table=t.spec.target_name, mode=t.mode, status="failed", error=error)
                      for t in tables]
        run.status = "failed"
        run.finished_at = datetime.now(UTC)
        self.store.start_run(run)
        self.store.finish_run(run)
        for t in tables:
            self.record_failure(t.spec.target_name, run.run_id, error)
        return run

    def _copy_with_retries(self, plan: TablePlan, source: Source, destination: Destination,
                           run_id: str) -> TableRunRecord:
        started = time.monotonic()
        try:
            return retrying(lambda: self._copy_table(plan, source, destination, run_id), plan.label)
        except Exception as exc:
            error = error_text(exc)
            self.record_failure(plan.state_key, run_id, error)
            return TableRunRecord(table=plan.state_key, mode=plan.table.mode, status="failed",
                                  duration_s=time.monotonic() - started, error=error)

    def record_failure(self, key: str, run_id: str, error: str) -> None:
        self.ledger.failed(key, run_id, error)

    # ------------------------------------------------------------------ one table

    def _copy_table(self, plan: TablePlan, source: Source, destination: Destination,
                    run_id: str) -> TableRunRecord:
        job_name = self.loaded.job.job
        if source.capabilities.files:  # a set of files: committed file by file (copyjob.file_copy)
            return self._copy_file_set(plan, source, destination, run_id)
        t = plan.table
        started = time.monotonic()
        # 1. state, reconciled with the destination's marker
        standing = self.ledger.reconcile(plan.state_key, destination, plan.target_schema.table,
                                         definition=t.definition)
        state = standing.state
        # 2. full or incremental, and which rows
        full = t.mode == "full" or not standing.continues
        column = t.incremental_column
        increment = (plan_full(source, plan.source_schema.table, column) if full or column is None
                     else plan_incremental(source, plan.source_schema.table, column, state.watermark,
                                           reread_boundary=t.update_method == "merge"))
        mode_used = "full" if full else "incremental"
        # a table built under another definition is replaced: appending a full copy to it would duplicate rows
        truncate = t.update_method == "overwrite" or (full and t.truncate_before_full_load) or standing.redefined
        # 3. destination table
        append = t.update_method == "append"  # keeps every row: a table created for it has no primary key
        prepared = prepare_target(destination, plan.target_schema, create=self.loaded.job.copy_settings
                                  .create_tables, defer_key=True, append=append, replace=standing.redefined)
        deferred_key = plan.target_schema.primary_key if prepared.created and not append else ()
        # 4. read + write + marker in one transaction
        encoded, wm_type = encode_value(increment.watermark_after)

        def marker() -> StateMarker:
            return StateMarker(job=job_name, table=plan.state_key, run_id=run_id,
                               state={"watermark": encoded, "watermark_type": wm_type, "mode": mode_used,
                                      DEFINITION_KEY: dict(t.definition)})

        rows_read = 0
        # a merge reads the rows at the previous watermark again (rows may have joined it since): say how many
        boundary = _BoundaryCount(column, increment.watermark_before) \
            if column and not full and t.update_method == "merge" and increment.watermark_before is not None \
            else None

        def counted(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            nonlocal rows_read
            for b in batches:
                rows_read += b.num_rows
                if boundary is not None:
                    boundary.add(b)
                yield b

        def durable() -> int:
            if increment.nothing_to_read and not truncate:
                return 0
            return self._write(plan, source, destination, increment, prepared.existing, truncate, deferred_key,
                               marker, counted)

        # 4. and 5.: the data with its marker, then the state (copyjob.core.checkpoint); nothing to acknowledge
        written = Checkpoint(save=lambda: self.ledger.committed(
            state, run_id, watermark=increment.watermark_after, watermark_type=wm_type)).commit(durable)
        if written and self._passes_through(plan, source, destination, prepared.existing):
            rows_read = written
        return TableRunRecord(
            table=plan.state_key, mode=mode_used, status="ok", rows_read=rows_read, rows_written=written,
            duration_s=time.monotonic() - started, watermark_before=increment.watermark_before,
            watermark_after=increment.watermark_after, null_watermark_rows=increment.null_rows,
            note=standing.edit, reread_rows=boundary.rows if boundary else None)

    def _write(self, plan: TablePlan, source: Source, destination: Destination, increment: IncrementPlan,
               existing: Any, truncate: bool, deferred_key: tuple[str, ...],
               marker: Callable[[], StateMarker],
               counted: Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]) -> int:
        t = plan.table
        settings = self.loaded.job.copy_settings
        # on a terminal only: SQLite and DuckDB count to estimate, a cost worth paying only for a person watching
        total = self._estimate(source, plan) if increment.full and self.progress.live else None
        with self.progress.table(plan.label, total) as advance:
            if self._passes_through(plan, source, destination, existing):
                streams = [read_binary(source, plan.source_schema, filters) for filters in increment.reads]
                return write_binary(destination, plan.target_schema, streams, method=t.update_method,
                                    truncate=truncate, deferred_key=deferred_key, marker=marker,
                                    progress=advance).rows_written
            batch_rows = min(settings.batch_rows, destination.capabilities.preferred_batch_rows)
            loads = [counted(read_table(source, plan.source_schema, filters, batch_rows,
                                            settings.parallel if increment.full else 1))
                     for filters in increment.reads]
            return write_batches(destination, plan.target_schema, loads, method=t.update_method, key=plan.key,
                                 truncate=truncate, deferred_key=deferred_key, marker=marker,
                                 progress=advance).rows_written

    @staticmethod
    def _estimate(source: Source, plan: TablePlan) -> int | None:
        """The source's row estimate for a full copy's progress bar; a failure to estimate fails nothing."""
        try:
            return source.estimate_rows(plan.source_schema.table)
        except Exception as exc:  # statistics are a nicety: never the reason a copy fails
            log.debug("%s: no row estimate: %s", plan.label, exc)
            return None

    @staticmethod
    def _passes_through(plan: TablePlan, source: Source, destination: Destination, existing: Any) -> bool:
        """PostgreSQL to PostgreSQL with identical column types: move the binary COPY stream undecoded."""
        if not (source.capabilities.postgres_binary and destination.capabilities.postgres_binary):
            return False
        if plan.table.update_method == "merge" or existing is None:
            return False
        if any(c.generated for c in existing.columns):  # the server computes them: the stream must not carry them
            return False
        native = {c.name: c.native_type for c in existing.columns}
        return all(native.get(tc.name) == sc.native_type and sc.native_type
                   for sc, tc in zip(plan.source_schema.columns, plan.target_schema.columns, strict=True))

    def _copy_file_set(self, plan: TablePlan, source: Source, destination: Destination,
                       run_id: str) -> TableRunRecord:
        from copyjob.file_copy import FileCopyContext, copy_file_set

        settings = self.loaded.job.copy_settings
        ctx = FileCopyContext(job=self.loaded.job.job, run_id=run_id, create_tables=settings.create_tables,
                              batch_rows=min(settings.batch_rows, destination.capabilities.preferred_batch_rows),
                              progress=self.progress, save=self.ledger.save, stop=self.stop)
        standing = self.ledger.reconcile(plan.state_key, destination, plan.target_schema.table,
                                         definition=plan.table.definition)
        record = copy_file_set(ctx, plan, cast("FileSetSource", source), destination, standing.state,
                               replace_all=standing.redefined)
        record.note = standing.edit
        return record
