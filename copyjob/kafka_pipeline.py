"""``transport: kafka``: runs of a job whose capture and apply sides meet on Kafka topics.

``copyjob run`` (:func:`run_kafka`), in this order:
1. check every table at the source (a job that does not fit writes nothing, not even topics);
2. take the job's run lock;
3. capture each table: publish, wait for the broker's acknowledgement, then save its position
   (copyjob.kafka_capture; the cdc tables together, up to what was committed when the run began:
   copyjob.cdc with copyjob.apply.topic_sink's sink), in a thread of its own while 5. already runs;
4. once the capture is done, note the end offset of every partition of the tables' topics;
5. apply (copyjob.apply.kafka_apply) what arrives, until the destination holds every partition up to those
   offsets, whichever group member applied them; then record the run.

The apply side (5.) runs in a child process when a second CPU is there for it
(copyjob.kafka_apply_process: both sides are CPU-bound Python), else in this process (:class:`LocalApply`);
either way through :class:`ApplySide`, and the same code applies.

``copyjob capture`` does 1–3, ``copyjob apply`` only the consumer side, ``copyjob stream`` both until stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from copyjob.apply.kafka_apply import Applier, ApplyTable, TableStats, run_until
from copyjob.connectors.kafka import source_info, topic_of
from copyjob.core.contracts import RunRecord, TableRunRecord
from copyjob.core.errors import CopyjobError, error_text, is_retriable
from copyjob.core.retry import Outage, retrying
from copyjob.core.schema import TableName
from copyjob.core.transport import Transport
from copyjob.core.urls import ConnectionUrl, parse_url
from copyjob.filesets import endpoint_url
from copyjob.jobfile import KafkaSettings, ResolvedTable
from copyjob.kafka_apply_process import ChildApply, child_wanted
from copyjob.kafka_capture import Capturer, check_kafka_tables
from copyjob.loader import LoadedJob
from copyjob.topic_source import is_topic_source, source_settings, topic_tables

if TYPE_CHECKING:
    from copyjob.runs import RunContext

log = logging.getLogger("copyjob.kafka")


def settings_of(loaded: LoadedJob) -> KafkaSettings:
    if is_topic_source(loaded.job):
        return source_settings(loaded)
    assert loaded.job.kafka is not None, "the loader requires kafka: with transport kafka"
    # the prefix as the job uses it (copyjob or copyjob.<env> when unset): the schema topic is named after it
    return loaded.job.kafka.model_copy(update={"topic_prefix": loaded.topic_prefix})


def open_transport(loaded: LoadedJob) -> Transport:
    from copyjob.connectors.kafka.transport import KafkaTransport

    return KafkaTransport(settings_of(loaded))


def group_id(loaded: LoadedJob) -> str:
    return settings_of(loaded).group_id or f"copyjob.{loaded.stream_name}"


def apply_tables(loaded: LoadedJob, tables: list[ResolvedTable]) -> list[ApplyTable]:
    """The apply side's view of the tables; it needs the source's URL only to name topics, never a connection."""
    from copyjob.connectors.kafka import dlq_topic

    if is_topic_source(loaded.job):
        return topic_tables(loaded, tables)
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


class ApplySide(Protocol):
    """The apply side of a run or stream, in this process (:class:`LocalApply`) or in a child
    (:class:`copyjob.kafka_apply_process.ChildApply`); ``tables`` hold its counts once it finished."""

    tables: list[ApplyTable]

    def follow(self, done: Callable[[], bool], stop: Callable[[], bool]) -> None:
        """Apply what arrives until ``done()`` or ``stop()``; raises the apply's failure."""

    def catch_up(self, ends: dict[tuple[str, int], int], stop: Callable[[], bool]) -> None:
        """Apply until the destination holds every partition up to ``ends`` (or ``stop()``)."""

    def finish(self) -> None:
        """End the apply after its current batch; raises its failure."""

    def close(self) -> None:
        """Release what is left (never raises)."""


class LocalApply:
    """The apply side in this process: the consumer and the destination of ``sides`` (closed by its owner).
    With ``outages`` (``copyjob stream``), a retriable failure (the destination or the broker went away)
    closes the apply side and opens it again until that works or ``copy.max_outage`` has passed (one log line
    per attempt, copyjob.core.retry); each partition is then read again from its destination marker, so what
    was polled but not written comes again and nothing is applied twice."""

    def __init__(self, loaded: LoadedJob, tables: list[ApplyTable], sides: Sides, run_id: str,
                 stop: threading.Event, *, outages: bool = False) -> None:
        self.loaded, self.tables, self.sides, self.run_id = loaded, tables, sides, run_id
        self.stop_event, self.outages = stop, outages

    def open(self) -> None:
        from copyjob.connectors import open_destination

        destination = open_destination(endpoint_url(self.loaded.job.destination, self.loaded.base_dir))
        try:
            self.sides.applier = new_applier(self.loaded, self.tables, self.sides.transport, destination,
                                             self.run_id)
        except BaseException:
            destination.close()
            raise
        self.sides.destination = destination

    def follow(self, done: Callable[[], bool], stop: Callable[[], bool]) -> None:
        if self.sides.applier is None:
            self.open()
        while True:
            assert self.sides.applier is not None
            try:
                run_until(self.sides.applier, done, stop, idle_timeout_s=float("inf"))
                return
            except Exception as exc:
                if not self.outages or not is_retriable(exc) or stop():
                    raise
                outage = Outage("destination", self.loaded.job.copy_settings.max_outage_s(streaming=True),
                                stop=self.stop_event)
                outage.failed(exc)
            self._drop()
            try:
                retrying(self.open, "destination", outage=outage)
            except InterruptedError:
                return  # stopped while waiting

    def _drop(self) -> None:
        for close in (self.sides.applier, self.sides.destination):
            try:
                if close is not None:
                    close.close()
            except Exception as exc:  # broken: nothing left to release
                log.debug("closing the apply side: %s", error_text(exc))
        self.sides.applier = self.sides.destination = None

    def catch_up(self, ends: dict[tuple[str, int], int], stop: Callable[[], bool]) -> None:
        applier = self.sides.applier
        assert applier is not None
        run_until(applier, lambda: applier.caught_up(ends), stop)

    def finish(self) -> None:
        pass  # run_until returned with everything polled written

    def close(self) -> None:
        pass  # the sides' owner closes them


def apply_side(loaded: LoadedJob, tables: list[ApplyTable], sides: Sides, run_id: str, stop: threading.Event,
               transport_factory: Callable[[LoadedJob], Transport], *, outages: bool = False) -> ApplySide:
    """In a child when it can help (copyjob.kafka_apply_process.child_wanted) and the transport is the
    job's own (a transport given by the caller lives in this process only)."""
    if transport_factory is open_transport and child_wanted():
        return ChildApply(loaded, tables, run_id, outages=outages)
    return LocalApply(loaded, tables, sides, run_id, stop, outages=outages)


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
    from copyjob.connectors import destination_capabilities, open_source
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
                capture = _Capture(job_run, plans, source, source_url, sides.transport, run.run_id)
                if apply:  # 3. and 5. side by side, then 4. and the rest of 5.
                    _capture_and_apply(loaded, tables, sides, capture, run, job_run, transport_factory)
                else:  # 3.
                    capture.run()
                    run.tables = capture.records
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
    from copyjob.connectors.kafka.codec import job_encoder

    loaded = job_run.loaded
    settings = settings_of(loaded)
    encoder = job_encoder(settings, transport.registrar, loaded.topic_prefix, source_url.scheme)
    sink = KafkaSink(source_url, transport, encoder, prefix=loaded.topic_prefix,
                     batch_rows=loaded.job.copy_settings.batch_rows, one_partition=settings.partitions == 1)
    return run_cdc(job_run, plans, source, sink, run_id, until_stopped=until_stopped)


def _capture_one(capturer: Capturer, plan: Any, job_run: RunContext) -> TableRunRecord:
    try:
        return retrying(lambda: capturer.capture(plan), plan.label)
    except Exception as exc:
        error = error_text(exc)
        job_run.record_failure(plan.state_key, capturer.run_id, error)
        return TableRunRecord(table=plan.state_key, mode=plan.table.mode, status="failed", error=error)


class _Capture:
    """3.: every table through its capture commit, the cdc tables together (they share one change stream)."""

    def __init__(self, job_run: RunContext, plans: list[Any], source: Any, source_url: ConnectionUrl,
                 transport: Transport, run_id: str) -> None:
        self.job_run, self.plans, self.source, self.source_url = job_run, plans, source, source_url
        self.transport, self.run_id = transport, run_id
        self.records: list[TableRunRecord] = []
        self.done = threading.Event()

    def topics(self) -> dict[str, bool]:
        """Every table's topic (compacted when keyed), as the capture creates it."""
        prefix = self.job_run.loaded.topic_prefix
        return {topic_of(prefix, source_info(self.source_url, TableName.parse(p.table.name))):
                bool(p.table.key or p.source_schema.primary_key) for p in self.plans}

    def run(self) -> None:
        try:
            capturer = Capturer(self.job_run.loaded, self.source, self.source_url, self.job_run.store,
                                self.transport, self.run_id)
            records = [_capture_one(capturer, plan, self.job_run) for plan in self.plans
                       if plan.table.mode != "cdc"]
            records += capture_cdc(self.job_run, [p for p in self.plans if p.table.mode == "cdc"], self.source,
                                   self.source_url, self.transport, self.run_id, until_stopped=False)
            self.records = records
        except Exception as exc:  # one the tables' own handling did not catch: every table failed
            error = error_text(exc)
            log.error("capture failed: %s", error)
            self.records = [TableRunRecord(table=p.state_key, mode=p.table.mode, status="failed", error=error)
                            for p in self.plans]
        finally:
            self.done.set()


def _capture_and_apply(loaded: LoadedJob, tables: list[ResolvedTable], sides: Sides, capture: _Capture,
                       run: RunRecord, job_run: RunContext,
                       transport_factory: Callable[[LoadedJob], Transport]) -> None:
    """3. in a thread while the apply side applies what arrives (5.), so that neither side waits for the
    other; once the capture is done, 4. the end offsets of the tables whose capture went well (or published
    before it failed: a file set's good files when others were bad), and 5. until the destination holds them.

    The commit orders stay those of each side: a captured change's position is saved after the broker's
    acknowledgement, an applied one's offset is committed with the data; the apply side only ever reads what
    the broker acknowledged (read_committed), so a crash anywhere loses and doubles nothing."""
    sides.transport.ensure_topics(capture.topics())  # the consumer subscribes to topics that exist
    thread = threading.Thread(target=capture.run, name="capture", daemon=True)
    thread.start()
    error: str | None = None
    applied: list[ApplyTable] = []
    caught_up_at = started = time.monotonic()
    side: ApplySide | None = None
    try:
        applied = apply_tables(loaded, tables)
        side = apply_side(loaded, applied, sides, run.run_id, job_run.stop, transport_factory)
        side.follow(capture.done.is_set, job_run.stop.is_set)
        thread.join()
        caught_up_at = time.monotonic()
        wanted = _captured(applied, capture.records)
        if wanted and not job_run.stop.is_set():
            side.catch_up(end_offsets(sides.transport, wanted), job_run.stop.is_set)
        side.finish()
    except Exception as exc:
        error = error_text(exc)
        log.error("apply failed: %s", error)
    finally:
        if side is not None:
            side.close()
    thread.join()  # the capture finishes its tables whatever became of the apply
    run.tables = capture.records
    elapsed = time.monotonic() - (caught_up_at if error is None else started)
    for rec in run.tables:
        rec.duration_s += elapsed
        if error is not None and rec.status == "ok":
            rec.status, rec.error = "failed", f"apply: {error}"
    if error is None:
        run.tables = merge_records(run.tables, _captured(applied, run.tables))


def _captured(tables: list[ApplyTable], records: list[TableRunRecord]) -> list[ApplyTable]:
    """The tables whose capture went well or published something."""
    good = {r.table for r in records if r.status == "ok" or r.rows_read}
    return [t for t in tables if t.name in good]


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

