"""Runs of a job whose source is ``kafka://`` (copyjob.topic_source): its topics applied into the destination.

``copyjob run`` (:func:`run_topics`), in this order:
1. take the job's run lock;
2. note the end offset of every partition of the tables' topics;
3. apply (copyjob.apply.kafka_apply: each segment in one destination transaction with the partition's next
   offset as its marker, then the group's offsets) until the destination holds every partition up to those
   offsets; then record the run.

``copyjob stream`` (:func:`stream_topics`) applies until SIGTERM/SIGINT, and ``copyjob apply`` is the apply
side of :mod:`copyjob.kafka_pipeline`, which reads these tables through the same copyjob.topic_source.
A process killed anywhere restarts each partition at its marker's offset: nothing lost, nothing applied twice.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from copyjob.apply.kafka_apply import ApplyTable, run_until
from copyjob.core.contracts import RunRecord, TableRunRecord
from copyjob.core.errors import error_text
from copyjob.filesets import endpoint_url
from copyjob.kafka_pipeline import (
    Sides,
    apply_kafka,
    apply_tables,
    end_offsets,
    merge_records,
    new_applier,
    open_transport,
)

if TYPE_CHECKING:
    from copyjob.runs import RunContext

log = logging.getLogger("copyjob.kafka")


def run_topics(job_run: RunContext, table_names: list[str] | None) -> RunRecord:
    """Apply the topics up to their end offsets at the start; returns the run record."""
    from copyjob.runs import new_run_id, select_tables

    loaded = job_run.loaded
    tables = select_tables(loaded, table_names)
    run = RunRecord(run_id=new_run_id(), job=loaded.scope, started_at=datetime.now(UTC), trigger=job_run.trigger)
    # 1. lock
    lock = job_run.store.acquire_lock(loaded.scope, f"run {run.run_id} ({job_run.trigger})",
                                      wait_s=job_run.lock_wait_s)
    if lock is None:
        return job_run.skip(run, tables)
    with lock:
        job_run.store.start_run(run)
        wanted = apply_tables(loaded, tables)
        run.tables = [TableRunRecord(table=t.name, mode="cdc", status="ok") for t in wanted]
        started = time.monotonic()
        try:
            _apply_to_end(job_run, wanted, run.run_id)
        except Exception as exc:
            error = error_text(exc)
            log.error("apply failed: %s", error)
            for rec in run.tables:
                rec.status, rec.error = "failed", f"apply: {error}"
        _count(run, wanted, time.monotonic() - started)
    run.finished_at = datetime.now(UTC)
    run.status = "ok" if all(t.status == "ok" for t in run.tables) else "failed"
    job_run.store.finish_run(run)
    return run


def stream_topics(job_run: RunContext, table_names: list[str] | None) -> RunRecord:
    """Apply what arrives until ``job_run.stop``; returns the run record (``stopped``, or ``failed``)."""
    from copyjob.runs import new_run_id, select_tables

    loaded = job_run.loaded
    tables = select_tables(loaded, table_names)
    run = RunRecord(run_id=new_run_id(), job=loaded.scope, started_at=datetime.now(UTC), trigger="stream")
    lock = job_run.store.acquire_lock(loaded.scope, f"stream {run.run_id}", wait_s=job_run.lock_wait_s)
    if lock is None:
        return job_run.skip(run, tables)
    with lock:
        job_run.store.start_run(run)
        started = time.monotonic()
        wanted: list[ApplyTable] = []
        try:
            wanted = apply_kafka(loaded, table_names, job_run.stop)
            run.tables = [TableRunRecord(table=t.name, mode="stream", status="ok") for t in wanted]
        except Exception as exc:
            error = error_text(exc)
            log.error("stream: apply failed: %s", error)
            run.tables = [TableRunRecord(table=t.spec.target_name, mode="stream", status="failed",
                                         error=f"apply: {error}") for t in tables]
        _count(run, wanted, time.monotonic() - started)
    run.finished_at = datetime.now(UTC)
    run.status = "failed" if any(t.status == "failed" for t in run.tables) else "stopped"
    job_run.store.finish_run(run)
    return run


def _apply_to_end(job_run: RunContext, wanted: list[ApplyTable], run_id: str) -> None:
    """2./3.: apply until every partition reached the end offsets noted first."""
    from copyjob.connectors import open_destination

    loaded = job_run.loaded
    sides = Sides(open_transport(loaded))
    try:
        ends = end_offsets(sides.transport, wanted)
        sides.destination = open_destination(endpoint_url(loaded.job.destination, loaded.base_dir))
        sides.applier = new_applier(loaded, wanted, sides.transport, sides.destination, run_id)
        applier = sides.applier
        run_until(applier, lambda: applier.caught_up(ends), job_run.stop.is_set)
    finally:
        sides.close()


def _count(run: RunRecord, wanted: list[ApplyTable], elapsed_s: float) -> None:
    """Rows read = events consumed, rows written = changes applied; dead letters fail the table."""
    events = {t.name: t.stats.events + t.stats.dlq for t in wanted}
    for rec in run.tables:
        rec.duration_s += elapsed_s
        rec.rows_read = events.get(rec.table, rec.rows_read)
    run.tables = merge_records(run.tables, wanted)
