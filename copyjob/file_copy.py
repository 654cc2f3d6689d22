"""Copying one table of a file source: file by file, each small group of files committed with its state.

Called by :meth:`copyjob.runner.JobRun._copy_table` for a file source, with the table's state already
reconciled with the destination's marker. Steps:

1. plan, from the run's one listing (ingest.files): every file for a fresh pass (mode full, or the first
   run), the rest of a pass that a crash or an error interrupted, else the new, rewritten and fixed files;
2. read the files in (modification time, path) order. A small file is read whole before any of it is
   written, so a bad one never reaches the destination, and small files are committed in groups; a large
   file streams (read ahead in a thread) in a transaction of its own, rolled back if it turns out bad;
3. a file with columns the table lacks first commits what came before, then adds them (apply.prepare_target);
4. each commit carries the state after its last file (the mark, the names at the mark, the quarantined
   files), the pass's last commit the finished pass (a commit of the marker alone when no rows are left), so a
   crash between commits loses nothing and doubles nothing. Overwrite and truncate empty the
   table in the first commit of a pass;
5. a bad file is quarantined: its problem (file:line) is logged and reported, the mark moves past it, and it
   is read again once it changes; the table is reported failed while the good files stay committed;
6. the state store is saved after each commit (step 2 of :class:`copyjob.core.checkpoint.Checkpoint`) and at
   the end with the outcome (also when an error ends the copy, before it is passed on).

Steps 1, 2 (the reading), 3 (which columns) and 5 are the file set's capture,
:class:`copyjob.ingest.file_pass.FileSetPass`, shared with the Kafka capture of a file set
(copyjob.kafka_capture), which publishes instead of writing and saves the mark after the broker's ack.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from copyjob.apply import prepare_target
from copyjob.apply.writer import renamed
from copyjob.core.checkpoint import Checkpoint
from copyjob.core.contracts import (
    Destination,
    FileInfo,
    FileLoadSession,
    FileReader,
    FileSetSource,
    LoadSession,
    StateMarker,
    TableRunRecord,
    TableState,
)
from copyjob.core.plan import TablePlan
from copyjob.core.schema import Column, TableName, TableSchema
from copyjob.core.values import encode_value
from copyjob.ingest.file_pass import GROUP_BYTES, GROUP_FILES, SMALL_FILE_BYTES, FileSetPass
from copyjob.ingest.files import (
    FileMark,
)
from copyjob.offsets.ledger import DEFINITION_KEY
from copyjob.progress import Progress
from copyjob.snapshot.background import prefetch

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("copyjob")

@dataclass(frozen=True)
class FileCopyContext:
    job: str
    run_id: str
    create_tables: bool
    batch_rows: int
    progress: Progress
    save: Callable[[TableState], None]
    stop: threading.Event | None = None
    """Set (SIGTERM): commit what is read and end the pass; the next run resumes it."""


def copy_file_set(ctx: FileCopyContext, plan: TablePlan, source: FileSetSource, destination: Destination,
                  state: TableState, *, replace_all: bool = False) -> TableRunRecord:
    """Copy one file-set table (see the module docstring). A bad file fails the table without an exception;
    any other error is raised after the committed progress is saved. ``replace_all``: the table was built
    under another definition (offsets.ledger): the fresh pass replaces what it holds."""
    return _FileSetCopy(ctx, plan, source, destination, state, replace_all).run()


class _FileSetCopy:
    def __init__(self, ctx: FileCopyContext, plan: TablePlan, source: FileSetSource, destination: Destination,
                 state: TableState, replace_all: bool = False) -> None:
        self.ctx, self.plan, self.destination, self.state = ctx, plan, destination, state
        t = plan.table
        self.rename = dict(t.columns)
        self.target_table = TableName.parse(t.target_name)
        # the table's columns, named as in the source: the destination's, and those loaded by this run
        existing = destination.reflect(self.target_table)
        back = {v: k for k, v in self.rename.items()}
        self.pass_ = FileSetPass(plan, source, state, (replace(c, name=back.get(c.name, c.name))
                                                       for c in (existing.columns if existing else ())),
                                 ctx.batch_rows)
        self.committed_mark = self.pass_.mark
        self.truncate = self.pass_.fresh and (t.update_method == "overwrite" or t.truncate_before_full_load
                                              or replace_all)
        self.table_exists = existing is not None
        self.session: LoadSession | None = None
        self.buffered: list[pa.RecordBatch] = []
        self.group_files = self.group_bytes = 0
        self.pending_read = self.pending_written = 0
        self.rows_read = self.rows_written = 0
        self.commits = 0
        self.committed_id: str | None = None
        self.advance: Callable[[int], None] = lambda rows: None

    # ------------------------------------------------------------ the pass

    def run(self) -> TableRunRecord:
        started = time.monotonic()
        before = self.state.watermark
        try:
            with self.ctx.progress.table(self.plan.label) as advance:
                self.advance = advance
                self._copy_all()
        except BaseException:
            self._abort_session()
            if self.commits:
                self._save(self.committed_mark, status=None)
            raise
        self.pass_.report_quarantined()
        error = self.pass_.error()
        self._save(self.pass_.mark, status="failed" if error else "ok", error=error)
        return TableRunRecord(table=self.plan.state_key, mode=self.pass_.mode_used,
                              status="failed" if error else "ok", rows_read=self.rows_read,
                              rows_written=self.rows_written, duration_s=time.monotonic() - started,
                              watermark_before=before, watermark_after=self.pass_.mark.watermark, error=error)

    def _copy_all(self) -> None:
        """Copy the planned files, and finish the pass unless a stop request ends it early (the next run
        resumes it)."""
        for f in self.pass_.todo:
            if self.ctx.stop is not None and self.ctx.stop.is_set():
                self._commit()
                return
            if not self.pass_.copy(f, self._add_columns, self._copy_file):
                continue  # quarantined
            if f.size > SMALL_FILE_BYTES:
                self._commit()  # a large file in a transaction of its own
                continue
            self.group_files += 1
            self.group_bytes += f.size
            if self.group_files >= GROUP_FILES or self.group_bytes >= GROUP_BYTES:
                self._commit()
        if self.truncate and self.table_exists and not self.pass_.todo:  # overwrite, no file at all: emptied
            self._open_session()
        self.pass_.finish()
        if self.session is None and self.table_exists and self.pass_.mark not in (self.committed_mark,
                                                                                  self.pass_.previous):
            # nothing left to write, but the mark moved (the pass finished, files were quarantined): it goes
            # with the data all the same, so the destination's marker is the whole truth
            self.truncate = False  # every file of an overwrite pass was bad: the table stays as it was
            self._open_session()
        self._commit()

    def _copy_file(self, f: FileInfo, reader: FileReader) -> None:
        """Write one file into the open session (the pass moves the mark past it, then it is committed)."""
        if f.size <= SMALL_FILE_BYTES:
            self._copy_small(f, reader)
        else:
            self._copy_large(f, reader)

    def _copy_small(self, f: FileInfo, reader: FileReader) -> None:
        """Read the whole file first (a bad one raises before anything is written), then add it to the group."""
        batches = list(reader.batches(self.pass_.load_schema()))
        if not self.pass_.load:  # an empty file, and no columns known yet: nothing to write
            return
        self._write(self._open_session(), f, batches, coalesce=not self.destination.capabilities.files)

    def _copy_large(self, f: FileInfo, reader: FileReader) -> None:
        """Stream the file in a transaction of its own; a bad file rolls it back."""
        self._commit()
        schema = self.pass_.load_schema()
        stream = cast(Generator["pa.RecordBatch", None, None],
                      prefetch([lambda: reader.batches(schema)], max_buffered=2))
        try:
            self._write(self._open_session(), f, stream)
        except BaseException:
            stream.close()
            self._abort_session()
            raise

    # ------------------------------------------------------------ columns

    def _target(self) -> TableSchema:
        columns = tuple(replace(c, name=self.rename.get(c.name, c.name)) for c in self.pass_.load)
        return TableSchema(self.target_table, columns, self.plan.target_schema.primary_key)

    def _add_columns(self, new: list[Column]) -> None:
        """``new`` columns are loaded from now on (the pass added them): commit what came before (written
        without them), then create or extend the table."""
        self._commit()
        types = self.pass_.types
        if self.table_exists and all(c.name in types for c in new):
            return
        prepared = prepare_target(self.destination, self._target(), create=self.ctx.create_tables, defer_key=False,
                                  append=self.plan.table.update_method == "append")
        self.table_exists = True
        types.update({c.name: c for c in self.pass_.load if c.name not in types})
        if prepared.added_columns:
            log.info("%s: added column(s) %s", self.plan.label, ", ".join(prepared.added_columns))

    # ------------------------------------------------------------ sessions and commits

    def _open_session(self) -> LoadSession:
        if self.session is None:
            if not self.pass_.load:  # an empty load (overwrite with no file): the table's own columns
                self.pass_.load = list(self.pass_.types.values())
            method = self.plan.table.update_method
            if method == "overwrite" and not self.truncate:  # emptied by the pass's first commit: add to it
                method = "append"
            self.session = self.destination.begin_load(self._target(), method, self.plan.key,
                                                       truncate=self.truncate)
        return self.session

    def _write(self, session: LoadSession, f: FileInfo, batches: Iterable[pa.RecordBatch], *,
               coalesce: bool = False) -> None:
        """Write a file's batches; ``coalesce`` gathers small files' batches into fewer, larger writes (one
        COPY per file would cost more than the rows)."""
        if self.destination.capabilities.files:  # one output file per source file
            cast(FileLoadSession, session).begin_file(f.path)
        for batch in renamed(batches, self._target()):
            if not batch.num_rows:
                continue
            self.pending_read += batch.num_rows
            if coalesce:
                self.buffered.append(batch)
                if sum(b.num_rows for b in self.buffered) >= self.ctx.batch_rows:
                    self._drain(session)
            else:
                self.pending_written += session.write(batch)
                self.advance(batch.num_rows)

    def _drain(self, session: LoadSession) -> None:
        if not self.buffered:
            return
        import pyarrow as pa

        rows = pa.Table.from_batches(self.buffered).combine_chunks().to_batches()
        self.buffered = []
        for batch in rows:
            self.pending_written += session.write(batch)
            self.advance(batch.num_rows)

    def _commit(self) -> None:
        """Commit the open session with the state after its last file."""
        if self.session is None:
            return
        self._drain(self.session)
        session, self.session = self.session, None
        commit_id = f"{self.ctx.run_id}.{self.commits + 1:06d}"  # sorts after the run's earlier commits
        mark = self.pass_.mark
        encoded, type_name = encode_value(mark.watermark)
        marker = StateMarker(job=self.ctx.job, table=self.plan.state_key, run_id=commit_id, state={
            "watermark": encoded, "watermark_type": type_name, "mode": self.pass_.mode_used,
            "extra": {"files": mark.to_json()}, DEFINITION_KEY: dict(self.plan.table.definition)})

        def committed() -> None:
            self.commits += 1
            self.committed_id, self.committed_mark = commit_id, mark
            self._save(mark, status=None)

        # the files with their mark in one destination transaction, then the state (copyjob.core.checkpoint)
        Checkpoint(save=committed).commit(lambda: session.commit(marker))
        self.rows_read += self.pending_read
        self.rows_written += self.pending_written
        self.pending_read = self.pending_written = self.group_files = self.group_bytes = 0
        self.truncate = False

    def _abort_session(self) -> None:
        self.buffered = []
        if self.session is not None:
            session, self.session = self.session, None
            session.abort()
        self.pending_read = self.pending_written = self.group_files = self.group_bytes = 0

    # ------------------------------------------------------------ state and report

    def _save(self, mark: FileMark, *, status: str | None, error: str | None = None) -> None:
        s = self.state
        s.watermark = mark.watermark
        s.watermark_type = "datetime" if mark.watermark is not None else None
        s.needs_full = False
        s.extra["files"] = mark.to_json()
        s.extra["committed_run_id"] = self.committed_id or self.ctx.run_id
        if status is not None:
            s.last_run_id = self.ctx.run_id
            s.last_run_at = datetime.now(UTC)
            s.last_status, s.last_error = status, error
        self.ctx.save(s)

