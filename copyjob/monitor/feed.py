"""What the page shows, read from the jobs' state stores by one thread.

Each turn (every ``refresh_s``, or at once when woken: serve wakes it when a run starts or ends) reads every
job's recent runs, table states and schedules, and swaps in a new :class:`Snapshot`. The HTTP threads only
read the latest snapshot. Runs that finished since the previous turn are counted in the metrics once.
Everything the snapshot holds has been through :func:`scrub`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from copyjob.core.contracts import RunRecord, StateStore, TableState
from copyjob.core.errors import CopyjobError
from copyjob.core.redaction import redact
from copyjob.loader import LoadedJob
from copyjob.monitor.metrics import Metrics

log = logging.getLogger("copyjob.monitor")

HISTORY_LIMIT = 50
"""Runs per job kept on the page (and looked at for runs that finished since the previous turn)."""


def scrub(value: Any) -> Any:
    """``value`` with every string redacted (passwords in URLs, secret parameters), however deeply nested."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


class Watched(Protocol):
    """A job the monitor shows, and how to open its state store. Serve's :class:`~copyjob.serve.ServedJob` is
    one (its ``loaded`` follows edits of the job file); ``copyjob monitor`` makes :class:`WatchedJob`."""

    @property
    def loaded(self) -> LoadedJob: ...

    @property
    def open_store(self) -> Callable[[], StateStore]: ...

    @property
    def name(self) -> str: ...


@dataclass
class WatchedJob:
    loaded: LoadedJob
    open_store: Callable[[], StateStore]

    @property
    def name(self) -> str:
        return self.loaded.job.job


@dataclass
class Snapshot:
    jobs: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per job, newest first, each run with its tables."""
    read_at: datetime | None = None
    errors: dict[str, str] = field(default_factory=dict)
    """Per job: why its state store could not be read this turn."""

    def run(self, run_id: str) -> dict[str, Any] | None:
        return next((r for runs in self.runs.values() for r in runs if r["run_id"] == run_id), None)


class Feed:
    def __init__(self, jobs: Sequence[Watched], *, refresh_s: float = 1.0, metrics: Metrics | None = None) -> None:
        self.jobs = jobs
        self.refresh_s = refresh_s
        self._metrics = metrics
        self._stores: dict[str, StateStore] = {}
        self._seen: dict[str, set[str]] = {}  # per job: finished runs already handed on
        self._snapshot = Snapshot()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.turns = 0

    # ---- lifetime

    def start(self) -> None:
        self.refresh()  # the first snapshot is there before the first request
        self._thread = threading.Thread(target=self._loop, name="copyjob-monitor-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def wake(self) -> None:
        """Read again now (thread-safe): a run started or ended, or an action changed the state."""
        self._wake.set()

    @property
    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.refresh_s)
            self._wake.clear()
            if not self._stop.is_set():
                self.refresh()

    # ---- one turn

    def refresh(self) -> None:
        snapshot = Snapshot(read_at=datetime.now(UTC))
        for job in self.jobs:
            try:
                view, runs = self._read(job)
            except CopyjobError as exc:
                snapshot.errors[job.name] = redact(str(exc))
                view, runs = _job_view(job, [], {}, []), []
                self._drop_store(job.name)
            view["error"] = snapshot.errors.get(job.name)
            snapshot.jobs.append(scrub(view))
            snapshot.runs[job.name] = scrub(runs)
        with self._lock:
            self._snapshot = snapshot
        self.turns += 1

    def _read(self, job: Watched) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from copyjob.summary import schedule_rows

        store = self._stores.get(job.name)
        if store is None:
            store = self._stores[job.name] = job.open_store()
        records = store.history(job.loaded.scope, limit=HISTORY_LIMIT)
        states = store.load_all(job.loaded.scope)
        schedules = schedule_rows(store, job.loaded.job, job.loaded.scope)
        view = _job_view(job, records, states, schedules)
        if self._metrics is not None:
            self._count_finished(job.name, records, self._metrics)
            self._metrics.successes(job.name, records)
            self._metrics.job_view(view)
        return view, [run_view(r) for r in records]

    def _count_finished(self, name: str, records: list[RunRecord], metrics: Metrics) -> None:
        """Runs that ended since the previous turn are counted once; those that had ended before the monitor
        started are not (counters count from the start of the process, as Prometheus expects)."""
        finished = {r.run_id: r for r in records if r.status != "running"}
        seen = self._seen.get(name)
        self._seen[name] = set(finished)
        if seen is None:
            return
        for run_id, record in sorted(finished.items(), key=lambda kv: kv[1].started_at):
            if run_id not in seen:
                metrics.run_finished(name, record)

    def _drop_store(self, name: str) -> None:
        store = self._stores.pop(name, None)
        if store is not None:
            try:
                store.close()
            except CopyjobError:
                pass


# ---------------------------------------------------------------- views


def run_view(run: RunRecord) -> dict[str, Any]:
    """A run as the API gives it: :func:`copyjob.summary.run_json` plus totals, duration and rows/s."""
    from copyjob.summary import run_json

    view = run_json(run)
    end = run.finished_at or datetime.now(UTC)
    duration = max(0.0, (end - run.started_at).total_seconds()) if run.started_at else 0.0
    rows_read = sum(t.rows_read for t in run.tables)
    rows_written = sum(t.rows_written for t in run.tables)
    view.update(duration_s=round(duration, 3), rows_read=rows_read, rows_written=rows_written,
                rows_per_s=_rate(rows_written, duration),
                error=next((t.error for t in run.tables if t.status == "failed" and t.error), None))
    for table in view["tables"]:
        table["rows_per_s"] = _rate(table["rows_written"], table["duration_s"])
    return view


def _rate(rows: int, seconds: float) -> float | None:
    return round(rows / seconds, 1) if seconds > 0 else None


def quarantined_files(state: TableState | None) -> int:
    """Files of a file-set table that could not be read and wait for a change (its mark's ``quarantined``)."""
    files = (state.extra.get("files") if state else None) or {}
    return len(files.get("quarantined") or {})


def _job_view(job: Watched, records: list[RunRecord], states: dict[str, TableState],
              schedules: list[dict[str, Any]]) -> dict[str, Any]:
    loaded = job.loaded
    modes = sorted({t.mode for t in loaded.tables})
    last = next((r for r in records if r.status != "running"), None)
    running = next((r for r in records if r.status == "running"), None)
    tables = []
    for t in loaded.tables:
        state = states.get(t.spec.target_name)
        tables.append({"table": t.spec.target_name, "mode": t.mode,
                       "last_run_at": state.last_run_at.isoformat() if state and state.last_run_at else None,
                       "last_status": state.last_status if state else None,
                       "last_error": state.last_error if state else None,
                       "quarantined_files": quarantined_files(state)})
    return {
        "job": job.name, "file": str(loaded.path), "destination": loaded.destination_identity,
        "modes": modes, "transport": loaded.job.transport,
        "schedules": [{"expression": _expression(s), "timezone": s["timezone"], "next_fire": s["next_run"],
                       "last_fire": s["last_fire"], "missed": s["missed"]} for s in schedules],
        "triggers": [{"path": t.file_arrival.path, "pattern": t.file_arrival.pattern,
                      "debounce": t.file_arrival.debounce} for t in loaded.job.triggers],
        "running": running.run_id if running else None,
        "last_run": None if last is None else {"run_id": last.run_id, "status": last.status,
                                               "trigger": last.trigger, "started_at": last.started_at.isoformat(),
                                               "finished_at": last.finished_at.isoformat()
                                               if last.finished_at else None},
        "tables": tables,
    }


def _expression(row: dict[str, Any]) -> str:
    return f"cron {row['cron']}" if "cron" in row else f"every {row['every']}"
