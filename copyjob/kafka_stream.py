"""``copyjob stream`` with transport kafka: capture and apply side by side until SIGTERM/SIGINT.

1. check the tables at the source and take the job's run lock (held until the stream stops);
2. a capture thread publishes each table again and again (the first pass is full or incremental by the state,
   later passes incremental), ``poll_interval_s`` apart, each pass through the capture commit; the cdc tables
   stream in a thread of their own (copyjob.cdc with copyjob.apply.topic_sink's sink) until stopped;
3. the apply side applies what arrives (copyjob.apply.kafka_apply; in a child process when a second CPU is
   there for it: copyjob.kafka_apply_process), so the destination follows the source; when the destination
   goes away (a retriable error) the apply side is opened again (one log line per attempt, 2, 4, … at most
   10 s apart, within ``copy.max_outage``: copyjob.core.retry, in copyjob.kafka_pipeline.LocalApply) and
   reads each partition again from its destination marker, so what was polled but not written comes again and
   nothing is applied twice;
4. on stop: the capture finishes its pass, the apply finishes its batch, the run is recorded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from copyjob.core.contracts import RunRecord, TableRunRecord
from copyjob.core.errors import CopyjobError, error_text, is_retriable
from copyjob.core.transport import Transport
from copyjob.filesets import endpoint_url
from copyjob.kafka_capture import Capturer, check_kafka_tables, relisted
from copyjob.kafka_pipeline import (
    ApplySide,
    Sides,
    apply_side,
    apply_tables,
    capture_cdc,
    merge_records,
    open_transport,
)
from copyjob.loader import LoadedJob

if TYPE_CHECKING:
    from copyjob.core.plan import TablePlan
    from copyjob.runs import RunContext

log = logging.getLogger("copyjob.kafka")


def stream_kafka(job_run: RunContext, table_names: list[str] | None = None, poll_interval_s: float = 0.5,
                 transport_factory: Callable[[LoadedJob], Transport] = open_transport) -> RunRecord:
    """Capture and apply until ``job_run.stop`` is set; returns the run record (status ``stopped`` when it
    ended on request, ``failed`` when a side failed)."""
    from copyjob.connectors import destination_capabilities, open_source
    from copyjob.preflight import check_tables
    from copyjob.runs import new_run_id, select_tables

    loaded = job_run.loaded
    tables = select_tables(loaded, table_names)
    run = RunRecord(run_id=new_run_id(), job=loaded.scope, started_at=datetime.now(UTC), trigger="stream")
    source_url = endpoint_url(loaded.job.source, loaded.base_dir)  # with the endpoints' options
    destination_url = endpoint_url(loaded.job.destination, loaded.base_dir)
    # 1. check and lock
    source = open_source(source_url)
    try:
        plans = check_tables(loaded, tables, source, destination_capabilities(destination_url))
        check_kafka_tables(loaded, plans)
    finally:
        source.close()
    lock = job_run.store.acquire_lock(loaded.scope, f"stream {run.run_id}", wait_s=job_run.lock_wait_s)
    if lock is None:
        return job_run.skip(run, tables)
    records = {p.state_key: TableRunRecord(table=p.state_key, mode="stream", status="ok") for p in plans}
    with lock:
        sides = Sides(transport_factory(loaded))
        sides.transport.publisher()  # one producer, made before the threads share it
        job_run.store.start_run(run)
        capture_done = threading.Event()
        polled = [p for p in plans if p.table.mode != "cdc"]
        workers = [threading.Thread(target=_capture_loop, name="capture", daemon=True, args=(
            job_run, polled, sides, run.run_id, records, poll_interval_s, capture_done))] if polled else []
        cdc = [p for p in plans if p.table.mode == "cdc"]
        if cdc:
            workers.append(threading.Thread(target=_cdc_stream, name="cdc", daemon=True, args=(
                job_run, cdc, sides, run.run_id, records, capture_done)))
        wanted = apply_tables(loaded, tables)
        failed = False
        side: ApplySide | None = None
        try:
            for worker in workers:
                worker.start()
            # 3. apply (in a child process when it can help: copyjob.kafka_apply_process)
            side = apply_side(loaded, wanted, sides, run.run_id, job_run.stop, transport_factory, outages=True)

            def stopping() -> bool:
                return job_run.stop.is_set() or capture_done.is_set()

            side.follow(stopping, stopping)
            side.finish()
        except Exception as exc:
            failed = True
            error = error_text(exc)
            log.error("stream: apply failed: %s", error)
            for rec in records.values():
                rec.status, rec.error = "failed", f"apply: {error}"
            run.tables = list(records.values())
        finally:
            # 4. stop both sides
            job_run.stop.set()
            if side is not None:
                side.close()
            for worker in workers:
                worker.join(timeout=60)
            if not failed:
                run.tables = merge_records(list(records.values()), wanted)
            sides.close()
    run.finished_at = datetime.now(UTC)
    run.status = "failed" if any(t.status == "failed" for t in run.tables) else "stopped"
    job_run.store.finish_run(run)
    return run


def _cdc_stream(job_run: RunContext, plans: list[TablePlan], sides: Sides, run_id: str,
                records: dict[str, TableRunRecord], done: threading.Event) -> None:
    """2. for the cdc tables: snapshot what needs it, then publish their changes until stopped (or a table
    failed: then the whole stream stops)."""
    from copyjob.connectors import open_source

    loaded = job_run.loaded
    source_url = endpoint_url(loaded.job.source, loaded.base_dir)
    try:
        source = open_source(source_url)
        try:
            result = capture_cdc(job_run, plans, source, source_url, sides.transport, run_id, until_stopped=True)
        finally:
            source.close()
    except Exception as exc:
        error = error_text(exc)
        result = [TableRunRecord(table=p.state_key, mode="cdc", status="failed", error=error) for p in plans]
    for rec in result:
        records[rec.table] = rec
    done.set()


def _capture_loop(job_run: RunContext, plans: list[TablePlan], sides: Sides, run_id: str,
                  records: dict[str, TableRunRecord], poll_interval_s: float, done: threading.Event) -> None:
    """2.: passes over every table until stopped; a failing table is logged and tried again next pass. A file
    set is listed again each pass."""
    from copyjob.connectors import open_source

    loaded = job_run.loaded
    source_url = endpoint_url(loaded.job.source, loaded.base_dir)
    try:
        source = open_source(source_url)
    except CopyjobError as exc:
        for rec in records.values():
            rec.status, rec.error = "failed", f"source: {exc}"
        done.set()
        return
    try:
        capturer = Capturer(loaded, source, source_url, job_run.store, sides.transport, run_id)
        while not job_run.stop.is_set():
            for plan in plans:
                rec = records[plan.state_key]
                try:
                    result = capturer.capture(plan if plan.files is None else relisted(plan, source))
                except Exception as exc:
                    error = error_text(exc)
                    log.warning("%s: capture failed%s: %s", plan.label,
                                " (will retry)" if is_retriable(exc) else "", error)
                    rec.error = error
                    continue
                rec.rows_read += result.rows_read
                rec.watermark_before = rec.watermark_before or result.watermark_before
                rec.watermark_after = result.watermark_after
                rec.error = result.error  # a file set's quarantined files
            job_run.stop.wait(poll_interval_s)
    finally:
        source.close()
