"""The capture side of ``transport: kafka``: read each table and publish its rows as change events.

Rows are read with the same planning as a direct run (ingest.watermark, snapshot.read_table). A full read
publishes every row as ``op: r`` (a snapshot row); an incremental read publishes the rows past the watermark as
``op: u``, because a watermark poller cannot tell an insert from an update (apply's merge treats both as an
upsert). Deletes are not seen by a poller; log-based capture (``mode: cdc``) publishes them through the CDC
orchestrator's topic sink (copyjob.apply.topic_sink).

Per table, the capture commit (steps in this order):
1. plan full or incremental from the state store (``reset`` sets needs_full: the next capture re-snapshots);
2. read the rows and publish them to ``<prefix>.<schema>.<table>``;
3. flush: wait until the broker acknowledged every event (the producer is idempotent, acks=all);
4. only then save the new watermark in the state store. A crash before 4 publishes the same rows again,
   which merge applies idempotently (and append marks with the same position); a table published from its
   beginning (its first capture, a new epoch) is published again under a new epoch (offsets.ledger), which
   the apply side takes in place of what it holds.

A file source's table (a set of files) is published file by file instead (:class:`FileSetCapture`), with the
pass of copyjob.file_copy: which files, reading, quarantine; its position is the file set's mark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from copyjob.connectors.kafka import source_info, topic_of
from copyjob.connectors.kafka.codec import SourceInfo, job_encoder
from copyjob.connectors.kafka.sizes import MessageTooLarge, too_large
from copyjob.core.checkpoint import Checkpoint
from copyjob.core.contracts import FileInfo, FileReader, FileSetSource, Source, StateStore, TableRunRecord, TableState
from copyjob.core.plan import TablePlan
from copyjob.core.schema import Column, TableName, TableSchema, parse_logical
from copyjob.core.transport import Publisher, Transport
from copyjob.core.urls import ConnectionUrl
from copyjob.core.values import encode_value
from copyjob.ingest import plan_full, plan_incremental
from copyjob.ingest.file_pass import GROUP_BYTES, GROUP_FILES, SMALL_FILE_BYTES, FileSetPass
from copyjob.loader import LoadedJob
from copyjob.offsets.ledger import EPOCH_KEY, Ledger, committed_by
from copyjob.snapshot import read_table

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("copyjob.kafka")


def check_kafka_tables(loaded: LoadedJob, plans: list[TablePlan]) -> None:
    """What Kafka cannot carry: overwrite and truncate need the whole table in one destination transaction."""
    for plan in plans:
        t = plan.table
        base = ("tables", t.index)
        if t.truncate_before_full_load:
            raise loaded.error("truncate_before_full_load is not available with transport kafka (use "
                               "copyjob replay to rebuild a table)", (*base, "truncate_before_full_load"))


@dataclass
class Capturer:
    """Publishes tables of one job through a transport; ``run_id`` stamps the state it saves."""

    loaded: LoadedJob
    source: Source
    source_url: ConnectionUrl
    store: StateStore
    transport: Transport
    run_id: str
    progress: Callable[[str], Any] | None = None
    quiet: set[str] = field(default_factory=set)
    """File-set tables whose still-quarantined files were reported once: later passes of a stream that find
    nothing new say nothing."""

    def __post_init__(self) -> None:
        settings = self.loaded.job.kafka
        assert settings is not None
        self.prefix = self.loaded.topic_prefix
        self.encoder = job_encoder(settings, self.transport.registrar, self.prefix, self.source_url.scheme)
        self.publisher: Publisher = self.transport.publisher()

    @property
    def ledger(self) -> Ledger:
        return self.loaded.ledger(self.store)

    def topic(self, plan: TablePlan) -> str:
        return topic_of(self.prefix, source_info(self.source_url, TableName.parse(plan.table.name)))

    def capture(self, plan: TablePlan) -> TableRunRecord:
        """One table through the capture commit (see the module docstring)."""
        if plan.files is not None:  # a set of files: published file by file
            return FileSetCapture(self, plan).run()
        t = plan.table
        started = time.monotonic()
        info = source_info(self.source_url, TableName.parse(plan.table.name))
        topic = topic_of(self.prefix, info)
        source_key = plan.source_key
        self.transport.ensure_topics({topic: bool(source_key)})
        # 1. full or incremental
        state, redefined = self.ledger.load_defined(plan.state_key, t.definition)
        self.encoder.epochs[topic] = state.extra.get(EPOCH_KEY, "")
        full = t.mode == "full" or state.needs_full or state.extra.get("committed_run_id") is None
        column = t.incremental_column
        increment = (plan_full(self.source, plan.source_schema.table, column) if full or column is None
                     else plan_incremental(self.source, plan.source_schema.table, column, state.watermark,
                                           reread_boundary=t.update_method == "merge"))
        encoded, wm_type = encode_value(increment.watermark_after)
        position = {"watermark": encoded, "run_id": self.run_id}
        op = "r" if full else "u"
        # 2. read and publish
        encoder = self.encoder.for_table(topic, plan.source_schema, source_key)
        published = 0
        settings = self.loaded.job.copy_settings
        for filters in increment.reads:
            for batch in read_table(self.source, plan.source_schema, filters, settings.batch_rows,
                                    settings.parallel):
                published += self._publish_rows(encoder, batch, op, info, position)
        # 3. the broker's acknowledgement, then 4. the position (copyjob.core.checkpoint; nothing to acknowledge)
        def save() -> None:
            state.extra["topic"] = topic
            self.ledger.committed(
                state, self.run_id, watermark=increment.watermark_after, watermark_type=wm_type)

        Checkpoint(save=save, after_durable="published").commit(self.publisher.flush)
        return TableRunRecord(table=plan.state_key, mode="full" if full else "incremental", status="ok",
                              rows_read=published, rows_written=0, duration_s=time.monotonic() - started,
                              watermark_before=increment.watermark_before,
                              watermark_after=increment.watermark_after, null_watermark_rows=increment.null_rows,
                              note=redefined)

    def _publish_rows(self, encoder: Any, batch: pa.RecordBatch, op: str, info: SourceInfo,
                      position: dict[str, Any]) -> int:
        # column-wise encoding and one produce loop: no ChangeEvent or dict per row on this path
        keys, values = encoder.encode_batch(batch, op, info, position)
        try:
            self.publisher.publish_many(encoder.topic, keys, values, encoder.headers)
        except MessageTooLarge as exc:
            raise too_large(exc, info.table, batch, encoder.key) from exc
        return len(values)


def relisted(plan: TablePlan, source: Source) -> TablePlan:
    """A file-set table with a new listing of its files (each pass of ``copyjob stream`` looks again)."""
    assert plan.files is not None
    return replace(plan, listed=tuple(cast(FileSetSource, source).list_files(plan.files.pattern)))


class FileSetCapture:
    """One file-set table through the capture commit, file by file (steps in this order):

    1. plan the pass from the state store (copyjob.file_copy.FileSetPass: every file on the first pass, after
       ``reset`` and in mode full; the rest of an interrupted pass; else the new, rewritten and fixed files);
    2. read a file through before any of its rows is published, so a bad one is quarantined with nothing of it
       on the topic (a large file is read once to check it and again to publish it: memory stays bounded);
    3. publish its rows to ``<prefix>.<schema>.<set name>`` (``op: r`` in a full pass, else ``u``; the position
       names the file, its modification time and size);
    4. after each group of files (file_copy's groups: 50 files or 32 MiB, a large file alone), flush: wait until
       the broker acknowledged every event;
    5. only then save the mark after the group's last file in the state store, with the columns published so
       far (later files are read with their types). A crash before 5 publishes that group again: merge applies
       it idempotently; under append its rows arrive twice.
    """

    def __init__(self, capturer: Capturer, plan: TablePlan) -> None:
        self.capturer, self.plan = capturer, plan
        self.source = cast(FileSetSource, capturer.source)
        self.info = source_info(capturer.source_url, TableName.parse(plan.table.name))
        self.topic = topic_of(capturer.prefix, self.info)
        self.key = tuple(plan.table.key or ())
        # 1. the pass
        self.state, self.redefined = capturer.ledger.load_defined(plan.state_key, plan.table.definition)
        capturer.encoder.epochs[self.topic] = self.state.extra.get(EPOCH_KEY, "")
        self.pass_ = FileSetPass(plan, self.source, self.state, _columns(self.state),
                                 capturer.loaded.job.copy_settings.batch_rows)
        self.op = "r" if self.pass_.mode_used == "full" else "u"
        self.published = 0
        self.group_files = self.group_bytes = 0

    def run(self) -> TableRunRecord:
        started = time.monotonic()
        before = self.state.watermark
        self.capturer.transport.ensure_topics({self.topic: bool(self.key)})
        for f in self.pass_.todo:
            if not self.pass_.copy(f, lambda new: None, self._publish):
                continue  # quarantined
            self.group_files += 1
            self.group_bytes += f.size
            if f.size > SMALL_FILE_BYTES or self.group_files >= GROUP_FILES or self.group_bytes >= GROUP_BYTES:
                self._commit()
        self.pass_.finish()
        if self.pass_.todo or self.plan.state_key not in self.capturer.quiet:
            self.pass_.report_quarantined()
            self.capturer.quiet.add(self.plan.state_key)
        error = self.pass_.error()
        self._commit(status="failed" if error else "ok", error=error)
        return TableRunRecord(table=self.plan.state_key, mode=self.pass_.mode_used,
                              status="failed" if error else "ok", rows_read=self.published, rows_written=0,
                              duration_s=time.monotonic() - started, watermark_before=before,
                              watermark_after=self.pass_.mark.watermark, error=error, note=self.redefined)

    def _publish(self, f: FileInfo, reader: FileReader) -> None:
        """2./3. for one file (the pass then moves the mark past it)."""
        load = self.pass_.load_schema()
        if f.size <= SMALL_FILE_BYTES:
            self._send(f, load, list(reader.batches(load)))
            return
        for _ in reader.batches(load):  # read through: BadFile or FileColumnsGrew before anything is sent
            pass
        again = self.source.read_file(self.pass_.files, f, self.pass_.known(), batch_rows=self.pass_.batch_rows)
        try:
            self._send(f, load, again.batches(load))
        finally:
            again.close()

    def _send(self, f: FileInfo, load: TableSchema, batches: Iterable[pa.RecordBatch]) -> None:
        if not load.columns:  # an empty file, and no columns known yet: nothing to publish
            return
        schema = TableSchema(load.table, load.columns, tuple(k for k in self.key if load.column(k) is not None))
        encoder = self.capturer.encoder.for_table(self.topic, schema, self.key)
        position = {"file": f.path, "mtime_ns": f.mtime_ns, "size": f.size}
        for batch in batches:
            if batch.num_rows:
                self.published += self.capturer._publish_rows(encoder, batch, self.op, self.info, position)

    def _commit(self, *, status: str | None = None, error: str | None = None) -> None:
        """4./5.: flush, then save the mark (and, at the end of the pass, the table's status), in the one commit
        order (copyjob.core.checkpoint)."""
        Checkpoint(save=lambda: self._save(status, error), after_durable="published").commit(
            self.capturer.publisher.flush)
        self.group_files = self.group_bytes = 0

    def _save(self, status: str | None, error: str | None) -> None:
        s, mark = self.state, self.pass_.mark
        s.watermark = mark.watermark
        s.watermark_type = "datetime" if mark.watermark is not None else None
        s.needs_full = False
        s.extra["files"] = mark.to_json()
        s.extra["columns"] = [{"name": c.name, "type": str(c.type)} for c in self.pass_.known().columns]
        committed_by(s, self.capturer.run_id)
        s.extra["topic"] = self.topic
        if status is not None:
            s.last_run_id = self.capturer.run_id
            s.last_run_at = datetime.now(UTC)
            s.last_status, s.last_error = status, error
        self.capturer.store.save(self.capturer.loaded.scope, s)


def _columns(state: TableState) -> list[Column]:
    """The columns a file-set capture published before, with their types."""
    return [Column(c["name"], parse_logical(c["type"])) for c in state.extra.get("columns") or ()]
