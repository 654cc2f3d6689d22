"""Runs of a job whose source is ``kafka://`` (copyjob.topic_source): its topics applied into the destination.

``copyjob run`` (:func:`run_topics`), in this order:
1. take the job's run lock;
2. match the topic patterns against the broker's topics (copyjob.topic_patterns) and note the end offset of
   every partition of the tables' topics;
3. apply (copyjob.apply.kafka_apply: each segment in one destination transaction with the partition's next
   offset as its marker, then the group's offsets) until the destination holds every partition up to those
   offsets; then record the run and each table's outcome (``status`` and ``history`` name its topic).

``copyjob stream`` (:func:`stream_topics`) applies until SIGTERM/SIGINT. Every ``source.options.
pattern_refresh`` it lists the broker's topics again, and when a pattern matches a new one, the apply side is
opened again with it. When the destination goes away (a retriable error), the apply side is closed and opened
again (one log line per attempt, 2, 4, … at most 10 s apart, within ``copy.max_outage``: copyjob.core.retry;
``status`` says what the tables wait for) and reads each partition again from its destination marker.
``copyjob apply`` is the apply side of :mod:`copyjob.kafka_pipeline`, which reads these tables through the same
copyjob.topic_source. A process killed anywhere restarts each partition at its marker's offset: nothing lost,
nothing applied twice.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from copyjob.apply.kafka_apply import ApplyTable, run_until
from copyjob.core.contracts import RunRecord, TableRunRecord
from copyjob.core.errors import JobFileError, error_text, is_retriable
from copyjob.core.retry import Outage, retrying
from copyjob.filesets import endpoint_url
from copyjob.kafka_pipeline import Sides, apply_tables, end_offsets, merge_records, new_applier, open_transport
from copyjob.topic_source import has_patterns, source_options, with_topics

if TYPE_CHECKING:
    from copyjob.loader import LoadedJob
    from copyjob.runs import RunContext

log = logging.getLogger("copyjob.kafka")


def run_topics(job_run: RunContext, table_names: list[str] | None) -> RunRecord:
    """Apply the topics up to their end offsets at the start; returns the run record."""
    from copyjob.runs import new_run_id, select_tables

    run = RunRecord(run_id=new_run_id(), job=job_run.loaded.scope, started_at=datetime.now(UTC),
                    trigger=job_run.trigger)
    # 1. lock
    lock = job_run.store.acquire_lock(job_run.loaded.scope, f"run {run.run_id} ({job_run.trigger})",
                                      wait_s=job_run.lock_wait_s)
    if lock is None:
        return job_run.skip(run, select_tables(job_run.loaded, table_names))
    with lock:
        job_run.store.start_run(run)
        wanted: list[ApplyTable] = []
        started = time.monotonic()
        try:
            job_run.loaded = with_topics(job_run.loaded)  # 2.
            wanted = apply_tables(job_run.loaded, select_tables(job_run.loaded, table_names))
            run.tables = [TableRunRecord(table=t.name, mode="cdc", status="ok") for t in wanted]
            _apply_to_end(job_run, wanted, run.run_id)
        except Exception as exc:
            _failed(run, job_run, table_names, exc)
        _count(run, wanted, time.monotonic() - started)
        _finish(job_run, run, wanted)
    return run


def stream_topics(job_run: RunContext, table_names: list[str] | None) -> RunRecord:
    """Apply what arrives until ``job_run.stop``; returns the run record (``stopped``, or ``failed``)."""
    from copyjob.runs import new_run_id, select_tables

    run = RunRecord(run_id=new_run_id(), job=job_run.loaded.scope, started_at=datetime.now(UTC), trigger="stream")
    lock = job_run.store.acquire_lock(job_run.loaded.scope, f"stream {run.run_id}", wait_s=job_run.lock_wait_s)
    if lock is None:
        return job_run.skip(run, select_tables(job_run.loaded, table_names))
    with lock:
        job_run.store.start_run(run)
        started = time.monotonic()
        stream = _Stream(job_run, table_names, run.run_id)
        try:
            stream.run()
            run.tables = [TableRunRecord(table=name, mode="stream", status="ok") for name in stream.known]
        except Exception as exc:
            _failed(run, job_run, table_names, exc, mode="stream")
        _count(run, list(stream.known.values()), time.monotonic() - started)
        _finish(job_run, run, list(stream.known.values()), stopped=True)
    return run


class _Stream:
    """``copyjob stream``: the apply side until stopped, opened again for new topics and after outages."""

    def __init__(self, job_run: RunContext, table_names: list[str] | None, run_id: str) -> None:
        self.job_run, self.table_names, self.run_id = job_run, table_names, run_id
        self.known: dict[str, ApplyTable] = {}
        """Every table applied so far, by name: their counts add up over the apply sides opened."""
        self.tables: list[ApplyTable] = []
        self.sides: Sides | None = None
        loaded = job_run.loaded
        self.refresh_s = source_options(loaded.job).pattern_refresh_s if has_patterns(loaded) else None
        self.max_outage_s = loaded.job.copy_settings.max_outage_s(streaming=True)

    def run(self) -> None:
        stop = self.job_run.stop
        try:
            opened = self._open_riding_out(None)
            while opened and not stop.is_set():
                assert self.sides is not None and self.sides.applier is not None
                try:
                    run_until(self.sides.applier, self._new_topics, stop.is_set, idle_timeout_s=float("inf"))
                    if stop.is_set():
                        return
                    log.info("stream: new topics match the tables' patterns: applying them too")
                    self._close()
                    opened = self._open_riding_out(None)
                except Exception as exc:
                    if not is_retriable(exc) or stop.is_set():
                        raise
                    self._close()
                    opened = self._open_riding_out(exc)
        finally:
            self._close()

    def _open_riding_out(self, failure: Exception | None) -> bool:
        """:meth:`_open`, tried again while the destination (or broker) is away, within ``copy.max_outage``;
        False when stopped while waiting."""
        outage = Outage("destination", self.max_outage_s, waiting=self._waiting, stop=self.job_run.stop)
        if failure is not None:
            outage.failed(failure)
        try:
            retrying(self._open, "destination", outage=outage)
        except InterruptedError:
            return False
        return True

    def _open(self) -> None:
        """The tables (patterns matched now), a transport, the destination and a group member."""
        from copyjob.connectors import open_destination
        from copyjob.runs import select_tables

        loaded = self._matched()
        fresh = apply_tables(loaded, select_tables(loaded, self.table_names))
        self.tables = [self.known.setdefault(t.name, t) for t in fresh]
        sides = Sides(open_transport(loaded))
        try:
            sides.destination = open_destination(endpoint_url(loaded.job.destination, loaded.base_dir))
            sides.applier = new_applier(loaded, self.tables, sides.transport, sides.destination, self.run_id)
        except BaseException:
            sides.close()
            raise
        self.sides = sides
        self.next_refresh = time.monotonic() + (self.refresh_s or 0.0)

    def _matched(self) -> LoadedJob:
        self.job_run.loaded = with_topics(self.job_run.loaded)
        return self.job_run.loaded

    def _close(self) -> None:
        sides, self.sides = self.sides, None
        if sides is None:
            return
        try:
            sides.close()
        except Exception as exc:  # broken by the outage: nothing left to release
            log.debug("closing the apply side: %s", error_text(exc))

    def _new_topics(self) -> bool:
        """Every ``pattern_refresh``: whether the patterns match a topic not applied yet."""
        if self.refresh_s is None or time.monotonic() < self.next_refresh:
            return False
        self.next_refresh = time.monotonic() + self.refresh_s
        try:
            loaded = with_topics(self.job_run.loaded)
        except JobFileError:
            raise  # a new topic would be applied into another's table
        except Exception as exc:  # the broker is away: the consumer says so, and the next refresh tries again
            log.warning("stream: cannot list the broker's topics for the tables' patterns: %s", error_text(exc))
            return False
        from copyjob.runs import select_tables

        matched = {t.spec.name for t in select_tables(loaded, self.table_names)}
        return bool(matched - {t.topic for t in self.tables})

    def _waiting(self, side: str, since: datetime | None, error: str | None) -> None:
        """What the tables wait for, in the state store for ``copyjob status`` (None: no longer)."""
        try:
            for t in self.tables:
                state = self.job_run.store.load(self.job_run.loaded.scope, t.name)
                if since is None:
                    state.extra.pop("waiting", None)
                else:
                    state.extra["waiting"] = {"for": side, "since": since.isoformat(), "error": error}
                self.job_run.store.save(self.job_run.loaded.scope, state)
        except Exception as exc:  # the state store may be on the server that went away
            log.debug("cannot save the waiting state: %s", error_text(exc))


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


def _failed(run: RunRecord, job_run: RunContext, table_names: list[str] | None, exc: Exception,
            mode: str = "cdc") -> None:
    """Every table failed by ``exc``; a job-file problem found only now (two topics into one target) is raised
    as it is (exit 2)."""
    from copyjob.runs import select_tables

    error = error_text(exc)
    log.error("%sapply failed: %s", "stream: " if mode == "stream" else "", error)
    if isinstance(exc, JobFileError):
        run.status, run.finished_at = "failed", datetime.now(UTC)
        job_run.store.finish_run(run)
        raise exc
    if not run.tables:
        run.tables = [TableRunRecord(table=t.spec.target_name, mode=mode, status="ok")
                      for t in select_tables(job_run.loaded, table_names)]
    for rec in run.tables:
        rec.status, rec.error = "failed", f"apply: {error}"


def _count(run: RunRecord, wanted: list[ApplyTable], elapsed_s: float) -> None:
    """Rows read = events consumed, rows written = changes applied; dead letters fail the table."""
    events = {t.name: t.stats.events + t.stats.dlq for t in wanted}
    for rec in run.tables:
        rec.duration_s += elapsed_s
        rec.rows_read = events.get(rec.table, rec.rows_read)
    run.tables = merge_records(run.tables, wanted)


def _finish(job_run: RunContext, run: RunRecord, wanted: list[ApplyTable], *, stopped: bool = False) -> None:
    """Record the run, and each table's outcome with its topic and definition (``status`` and ``history`` name
    a table by its topic from there, the tables a pattern matched included)."""
    from copyjob.offsets.ledger import DEFINITION_KEY

    run.finished_at = datetime.now(UTC)
    failed = any(t.status == "failed" for t in run.tables)
    run.status = "failed" if failed else ("stopped" if stopped else "ok")
    job_run.store.finish_run(run)
    definitions = {t.spec.target_name: (t.spec.name, t.definition()) for t in job_run.loaded.tables}
    scope = job_run.loaded.scope
    for rec in run.tables:
        state = job_run.store.load(scope, rec.table)
        state.last_run_id, state.last_run_at = run.run_id, run.finished_at
        state.last_status, state.last_error = rec.status, rec.error
        state.extra.pop("waiting", None)
        if rec.table in definitions:
            topic, definition = definitions[rec.table]
            state.extra.update({"topic": topic, DEFINITION_KEY: definition})
        job_run.store.save(scope, state)
