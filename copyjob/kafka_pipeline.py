"""``transport: kafka``: runs of a job whose capture and apply sides meet on Kafka topics.

``copyjob run`` (:func:`run_kafka`), in this order:
1. check every table at the source (a job that does not fit writes nothing, not even topics);
2. take the job's run lock;
3. capture each table: publish, wait for the broker's acknowledgement, then save its position
   (copyjob.kafka_capture; the cdc tables together, up to what was committed when the run began:
   copyjob.cdc with copyjob.apply.topic_sink's sink);
4. note the end offset of every partition of the tables' topics;
5. apply (copyjob.apply.kafka_apply) until the destination holds every partition up to those offsets, whichever
   group member applied them; then record the run.

``copyjob capture`` does 1–3, ``copyjob apply`` only the consumer side, ``copyjob stream`` both until stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from copyjob.apply.kafka_apply import Applier, ApplyTable, TableStats, run_until
from copyjob.connectors.kafka import source_info, topic_of
from copyjob.core.contracts import RunRecord, TableRunRecord
from copyjob.core.errors import CopyjobError, error_text
from copyjob.core.retry import retrying
from copyjob.core.schema import TableName
from copyjob.core.transport import Transport
from copyjob.core.urls import ConnectionUrl, parse_url
from copyjob.filesets import endpoint_url
from copyjob.jobfile import KafkaSettings, ResolvedTable
from copyjob.kafka_capture import Capturer, check_kafka_tables
from copyjob.loader import LoadedJob

if TYPE_CHECKING:
    from copyjob.runs import RunContext

log = logging.getLogger("copyjob.kafka")


def settings_of(loaded: LoadedJob) -> KafkaSettings:
    assert loaded.job.kafka is not None, "the loader requires kafka: with transport kafka"
    return loaded.job.kafka


def open_transport(loaded: LoadedJob) -> Transport:
    from copyjob.connectors.kafka.transport import KafkaTransport

    return KafkaTransport(settings_of(loaded))


def group_id(loaded: LoadedJob) -> str:
    return settings_of(loaded).group_id or f"copyjob.{loaded.stream_name}"


def apply_tables(loaded: LoadedJob, tables: list[ResolvedTable]) -> list[ApplyTable]:
    """The apply side's view of the tables; it needs the source's URL only to name topics, never a connection."""
    from copyjob.connectors.kafka import dlq_topic

    prefix = loaded.topic_prefix
    url = parse_url(loaded.job.source.url, loaded.base_dir)
    return [ApplyTable(table=t.as_table_job(), topic=topic_of(prefix, source_info(url, TableName.parse(t.spec.name))),
                       dlq=dlq_topic(prefix, t.spec.target_name)) for t in tables]


@dataclass
class Sides:
    """What one kafka run holds open, closed in reverse order."""

    transport: Transport
    destination: Any = None
    applier: Applier | None = None

    def close(self) -> None:
        if self.applier is not None:
            self.applier.close()
        if self.destination is not None:
            self.destination.close()
        self.transport.close()


def new_applier(loaded: LoadedJob, tables: list[ApplyTable], transport: Transport, destination: Any,
                run_id: str, group: str | None = None) -> Applier:
    return Applier(loaded.job.job, tables, transport, destination, run_id, group or group_id(loaded),
                   loaded.topic_prefix, loaded.job.copy_settings.create_tables)


def end_offsets(transport: Transport, tables: list[ApplyTable]) -> dict[tuple[str, int], int]:
    return {(t.topic, p): end for t in tables for p, end in transport.end_offsets(t.topic).items()}


def merge_records(captured: list[TableRunRecord], tables: list[ApplyTable]) -> list[TableRunRecord]:
    """One record per table: rows read = events published, rows written = changes applied by this process;
    failed when events went to the dead-letter topic, and how many did (``dead_letters``)."""
    stats = {t.name: t for t in tables}
    out = []
    for rec in captured:
        t = stats.get(rec.table)
        if t is not None:
            rec.rows_written = t.stats.written
            rec.dead_letters = t.stats.dlq
            if t.stats.dlq and rec.status == "ok":
                rec.status = "failed"
                rec.error = (f"{t.stats.dlq} events could not be applied and went to {t.dlq} "
                             f"(last error: {t.stats.last_error})")
        out.append(rec)
    return out


def run_kafka(job_run: RunContext, table_names: list[str] | None,
              transport_factory: Callable[[LoadedJob], Transport] = open_transport,
              apply: bool = True) -> RunRecord:
    """``copyjob run`` (and, with ``apply=False``, ``copyjob capture``) with transport kafka."""
    from copyjob.connectors import destination_capabilities, open_destination, open_source
    from copyjob.preflight import check_tables
    from copyjob.runs import new_run_id, select_tables

    loaded = job_run.loaded
    tables = select_tables(loaded, table_names)
    run = RunRecord(run_id=new_run_id(), job=loaded.scope, started_at=datetime.now(UTC),
                    trigger=job_run.trigger)
    source_url = endpoint_url(loaded.job.source, loaded.base_dir)  # with the endpoints' options, as a direct run
    destination_url = endpoint_url(loaded.job.destination, loaded.base_dir)
    try:
        source = open_source(source_url)
    except CopyjobError as exc:
        return job_run.fail_all(run, tables, f"source: {exc}")
    try:
        # 1. check
        plans = check_tables(loaded, tables, source, destination_capabilities(destination_url))
        check_kafka_tables(loaded, plans)
        # 2. lock
        lock = job_run.store.acquire_lock(loaded.scope, f"run {run.run_id} ({job_run.trigger})",
                                          wait_s=job_run.lock_wait_s)
        if lock is None:
            return job_run.skip(run, tables)
        with lock:
            try:
                sides = Sides(transport_factory(loaded))
            except CopyjobError as exc:
                return job_run.fail_all(run, tables, f"kafka: {exc}")
            try:
                job_run.store.start_run(run)
                # 3. capture
                capturer = Capturer(loaded, source, source_url, job_run.store, sides.transport, run.run_id)
                captured = [_capture_one(capturer, plan, job_run) for plan in plans if plan.table.mode != "cdc"]
                captured += capture_cdc(job_run, [p for p in plans if p.table.mode == "cdc"], source, source_url,
                                        sides.transport, run.run_id, until_stopped=False)
                run.tables = captured
                if apply and not job_run.stop.is_set():
                    _apply_caught_up(loaded, tables, sides, destination_url, open_destination, run, job_run)
            finally:
                sides.close()
    finally:
        source.close()
    run.finished_at = datetime.now(UTC)
    run.status = "ok" if all(t.status == "ok" for t in run.tables) else "failed"
    job_run.store.finish_run(run)
    return run


def capture_cdc(job_run: RunContext, plans: list[Any], source: Any, source_url: ConnectionUrl,
                transport: Transport, run_id: str, *, until_stopped: bool) -> list[TableRunRecord]:
    """The cdc tables (all together: they share one change stream) through the CDC orchestrator, publishing."""
    if not plans:
        return []
    from copyjob.apply.topic_sink import KafkaSink
    from copyjob.cdc import run_cdc
    from copyjob.connectors.kafka.codec import Encoder

    loaded = job_run.loaded
    settings = settings_of(loaded)
    sink = KafkaSink(source_url, transport, Encoder(settings.format, transport.registrar), prefix=loaded.topic_prefix,
                     batch_rows=loaded.job.copy_settings.batch_rows, one_partition=settings.partitions == 1)
    return run_cdc(job_run, plans, source, sink, run_id, until_stopped=until_stopped)


def _capture_one(capturer: Capturer, plan: Any, job_run: RunContext) -> TableRunRecord:
    try:
        return retrying(lambda: capturer.capture(plan), plan.label)
    except Exception as exc:
        error = error_text(exc)
        job_run.record_failure(plan.state_key, capturer.run_id, error)
        return TableRunRecord(table=plan.state_key, mode=plan.table.mode, status="failed", error=error)


def _apply_caught_up(loaded: LoadedJob, tables: list[ResolvedTable], sides: Sides, destination_url: ConnectionUrl,
                     open_destination: Callable[[ConnectionUrl], Any], run: RunRecord, job_run: RunContext) -> None:
    """4./5.: apply until every partition reached the end offsets noted after the capture (of the tables
    whose capture went well, or published before it failed: a file set's good files when others were bad)."""
    wanted = apply_tables(loaded, [t for t in tables if any(
        r.table == t.spec.target_name and (r.status == "ok" or r.rows_read) for r in run.tables)])
    if not wanted:
        return
    started = time.monotonic()
    ends = end_offsets(sides.transport, wanted)
    try:
        sides.destination = open_destination(destination_url)
        sides.applier = new_applier(loaded, wanted, sides.transport, sides.destination, run.run_id)
        applier = sides.applier
        run_until(applier, lambda: applier.caught_up(ends), job_run.stop.is_set)
    except Exception as exc:
        error = error_text(exc)
        log.error("apply failed: %s", error)
        for rec in run.tables:
            if rec.status == "ok":
                rec.status, rec.error = "failed", f"apply: {error}"
    elapsed = time.monotonic() - started
    for rec in run.tables:
        rec.duration_s += elapsed
    run.tables = merge_records(run.tables, wanted)


def apply_kafka(loaded: LoadedJob, table_names: list[str] | None, stop: threading.Event, *,
                until_caught_up: bool = False, group: str | None = None,
                transport_factory: Callable[[LoadedJob], Transport] = open_transport) -> list[ApplyTable]:
    """``copyjob apply``: only the consumer side, until ``stop`` (or, with ``until_caught_up``, until the
    destination holds what the topics held when it started). Returns the tables with their counts."""
    from copyjob.connectors import open_destination
    from copyjob.runs import new_run_id, select_tables

    tables = apply_tables(loaded, select_tables(loaded, table_names))
    sides = Sides(transport_factory(loaded))
    try:
        ends = end_offsets(sides.transport, tables) if until_caught_up else None
        sides.destination = open_destination(endpoint_url(loaded.job.destination, loaded.base_dir))
        sides.applier = new_applier(loaded, tables, sides.transport, sides.destination, new_run_id(), group)
        applier = sides.applier
        done = (lambda: applier.caught_up(ends)) if ends is not None else (lambda: False)
        run_until(applier, done, stop.is_set, idle_timeout_s=float("inf") if ends is None else 300.0)
    finally:
        sides.close()
    return tables


def summary_of(tables: list[ApplyTable]) -> dict[str, TableStats]:
    return {t.name: t.stats for t in tables}
