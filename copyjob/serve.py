"""``copyjob serve``: run jobs on their schedules and file-arrival triggers until SIGTERM or SIGINT.

One loop thread decides, worker threads copy. Each turn of :meth:`Server.serve`'s loop:

1. fires the schedules that are due: one run per job however many of its schedules are due together,
   labelled ``schedule: <expr>`` (``…, missed`` for a catch-up at start), and records each schedule's fire
   time in the state store, so that a schedule missed while serve was down runs once when it starts again;
2. a schedule that fires while the job's previous run is still going is recorded as a skipped run (runs of
   one job never overlap); a run that finds the lock held by another process (a manual ``copyjob run``) is
   skipped and recorded by :class:`~copyjob.runner.JobRun` itself, which serve starts with ``lock_wait_s=0``;
3. collects debounced file arrivals; they start a run labelled ``trigger: file_arrival <files>``, or, while
   the job is busy, wait for its run to end (a skip would leave those files for the next event);
   a "run now" from the monitor (``--http``, :mod:`copyjob.monitor`) waits the same way;
4. sleeps until the next fire time, a file event, a finished run or the tick (``COPYJOB_SERVE_TICK``).

Stopping (SIGTERM/SIGINT): stop accepting runs, set every running :class:`JobRun`'s ``stop`` (it finishes the
table being copied and skips the rest), wait for them, exit 0. A second signal aborts at once (exit 130): the
state stays as consistent as after a crash.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from copyjob.core.contracts import RunRecord, StateStore, TableRunRecord
from copyjob.core.errors import EXIT_INTERRUPTED, CopyjobError, JobFileError, UsageError
from copyjob.core.urls import redact
from copyjob.ingest.file_watcher import FileWatcher
from copyjob.jobfile import duration_from_env, parse_duration
from copyjob.loader import LoadedJob
from copyjob.logs import log_context
from copyjob.progress import Progress
from copyjob.schedule import (
    Clock,
    ScheduleRule,
    SystemClock,
    is_missed,
    load_last_fire,
    recorded_fire,
    save_last_fire,
)
from copyjob.yamlfile import read_yaml

log = logging.getLogger("copyjob.serve")

TRIGGER_MAX = 64
RUN_NOW_LABEL = "manual: monitor"
"""Width of the ``trigger`` column of the run history: longer labels are shortened to fit."""
TICK_ENV = "COPYJOB_SERVE_TICK"
DEFAULT_TICK_S = 1.0
MAX_WORKERS = 8


# ---------------------------------------------------------------- what to serve


def find_job_files(paths: Iterable[Path]) -> list[Path]:
    """Job files named directly, plus every ``*.yaml``/``*.yml`` with a top-level ``job:`` key in the folders
    named (not ``variables.yaml``, not recursively). A file in a folder that cannot be read as YAML (too large,
    an alias bomb, a syntax error) may not be a job file at all: it is reported and skipped, and the folder's
    other jobs are served."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidates = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            found.extend(p for p in candidates if p.stem != "variables" and _has_job_key(p))
        elif path.exists():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such job file or folder")
    if not found:
        raise UsageError(f"no job files in {', '.join(map(str, paths))}")
    return list(dict.fromkeys(p.resolve() for p in found))


def _has_job_key(path: Path) -> bool:
    try:
        doc, _ = read_yaml(path)
    except JobFileError as exc:
        log.error("skipping %s: %s", path, redact(str(exc)))
        return False
    return isinstance(doc, dict) and "job" in doc


@dataclass
class ServedJob:
    """A job with its schedules and file watchers, and what the loop knows about it."""

    loaded: LoadedJob
    open_store: Callable[[], StateStore]
    rules: list[ScheduleRule]
    watchers: list[FileWatcher]
    next_due: dict[str, datetime] = field(default_factory=dict)
    missed: set[str] = field(default_factory=set)
    running: Future[Any] | None = None
    running_label: str = ""
    pending_files: list[str] = field(default_factory=list)
    run_requested: bool = False
    """The monitor's "run now": the next turn starts a run once the job is idle."""
    store: StateStore | None = None
    reload: Callable[[], LoadedJob] | None = None
    """Reads the job file again (with serve's --env and --variables); None: edits are not picked up."""
    signature: tuple[int, int] | None = None
    """The job file's (mtime_ns, size) when :attr:`loaded` was read: a run starts by checking it."""

    @property
    def name(self) -> str:
        return self.loaded.job.job

    @property
    def busy(self) -> bool:
        return self.running is not None and not self.running.done()


def served_job(loaded: LoadedJob, open_store: Callable[[], StateStore], *, poll: bool = False,
               poll_interval_s: float = DEFAULT_TICK_S,
               reload: Callable[[], LoadedJob] | None = None) -> ServedJob:
    """Schedules and watchers of a loaded job; trigger folders are relative to the job file and must exist."""
    rules = [ScheduleRule.of(s) for s in loaded.job.schedules]
    watchers = []
    for i, trigger in enumerate(loaded.job.triggers):
        arrival = trigger.file_arrival
        folder = (loaded.base_dir / arrival.path).resolve()
        if not folder.is_dir():
            raise loaded.error(f"folder not found: {folder}", ("triggers", i, "file_arrival", "path"))
        watchers.append(FileWatcher(folder, arrival.pattern, recursive=arrival.recursive,
                                    debounce_s=parse_duration(arrival.debounce), poll=poll,
                                    poll_interval_s=poll_interval_s,
                                    follow_symlinks_outside=loaded.job.source.follow_symlinks_outside))
    if reload is None:
        from copyjob.loader import load_job

        reload = partial(load_job, loaded.path, env=loaded.env)
    return ServedJob(loaded, open_store, rules, watchers, reload=reload, signature=_signature(loaded.path))


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def served_jobs(files: list[Path], load: Callable[[Path], LoadedJob], serve: Callable[[LoadedJob, Path], ServedJob],
                state: str | None) -> list[ServedJob]:
    """The jobs of ``files``. A file that does not load is a failed run in its job's history and an ERROR line,
    and the other jobs are served; only when none loads does serve stop, with the errors (exit 2)."""
    jobs: list[ServedJob] = []
    errors: list[JobFileError] = []
    for path in files:
        try:
            jobs.append(serve(load(path), path))
        except JobFileError as exc:
            errors.append(exc)
            error = redact("job file: " + "; ".join(str(p) for p in exc.problems))
            recorded = record_unloadable(path, error, state)
            log.error("job=%s status=failed rows=0 error=%s%s", recorded or path, error,
                      "" if recorded else " (not recorded: its name or destination cannot be read)",
                      extra={"event": "job_file_error", "error": error, "rows": 0})
    if not jobs and errors:
        raise JobFileError.of(errors)
    return jobs


def record_unloadable(path: Path, error: str, state: str | None, trigger: str = "serve start") -> str | None:
    """Record a failed run for a job file that does not load, under the job and destination it names as
    written (no variables to resolve there). Returns the job's name, or None when that cannot be told."""
    from copyjob.core.contracts import RunRecord, TableRunRecord
    from copyjob.core.scope import state_scope
    from copyjob.core.urls import identity, parse_url
    from copyjob.offsets import default_state_url, open_state_store
    from copyjob.runs import new_run_id

    try:
        doc, _ = read_yaml(path)
        name, url = doc["job"], doc["destination"]["url"]
        if not (isinstance(name, str) and isinstance(url, str)) or "${" in url:
            return None
        scope = state_scope(name, identity(parse_url(url, path.parent)))
        names = [t.get("target") or t.get("name") for t in doc.get("tables") or [] if isinstance(t, dict)]
        where = state or doc.get("state") or default_state_url(path)
        if not isinstance(where, str) or "${" in where:
            return None
        if "://" not in where and not Path(where).is_absolute():
            where = str(path.parent / where)
        now = datetime.now(UTC)
        run = RunRecord(run_id=new_run_id(), job=scope, started_at=now, finished_at=now, status="failed",
                        trigger=trigger, tables=[TableRunRecord(table=str(n), mode="-", status="failed", error=error)
                                                 for n in names if isinstance(n, str)])
        store = open_state_store(where)
        try:
            store.finish_run(run)
        finally:
            store.close()
    except (CopyjobError, KeyError, TypeError, AttributeError) as exc:
        log.debug("%s: cannot record its failure: %s", path, exc)
        return None
    return name


def tick_from_env() -> float:
    """The loop's longest sleep: ``COPYJOB_SERVE_TICK`` (a duration such as ``0.2s``), default 1 s."""
    return duration_from_env(TICK_ENV, DEFAULT_TICK_S)


# ---------------------------------------------------------------- labels


def schedule_label(rules: list[ScheduleRule], missed: bool) -> str:
    return _fit("schedule: " + " + ".join(r.expression for r in rules) + (", missed" if missed else ""))


def files_label(names: list[str]) -> str:
    """``trigger: file_arrival inbox/a.csv, inbox/b.csv (+3 more)``, within TRIGGER_MAX characters."""
    head = "trigger: file_arrival "
    shown: list[str] = []
    for i, name in enumerate(names):
        rest = len(names) - i - 1
        candidate = head + ", ".join([*shown, name]) + (f" (+{rest} more)" if rest else "")
        if shown and len(candidate) > TRIGGER_MAX:
            break
        shown.append(name)
    more = len(names) - len(shown)
    return _fit(head + ", ".join(shown) + (f" (+{more} more)" if more else ""))


def _fit(label: str) -> str:
    return label if len(label) <= TRIGGER_MAX else label[:TRIGGER_MAX - 1] + "…"


def _display_path(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


class _Discard(io.StringIO):
    """Serve logs one line per run, not progress lines."""

    def write(self, s: str) -> int:
        return len(s)


# ---------------------------------------------------------------- the loop


class Server:
    def __init__(self, jobs: list[ServedJob], *, clock: Clock | None = None, tick_s: float = DEFAULT_TICK_S,
                 workers: int | None = None) -> None:
        names = [j.name for j in jobs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"job name given by more than one job file: {', '.join(duplicates)}")
        if not any(j.rules or j.watchers for j in jobs):
            raise UsageError("nothing to serve: no job has schedules: or triggers:")
        for idle in (j for j in jobs if not (j.rules or j.watchers)):
            log.warning("job=%s (%s) has no schedules: or triggers:; serve never runs it", idle.name,
                        idle.loaded.path)
        self.jobs = jobs
        self.clock = clock or SystemClock()
        self.tick_s = tick_s
        self._pool = ThreadPoolExecutor(max_workers=workers or max(1, min(len(jobs), MAX_WORKERS)),
                                        thread_name_prefix="copyjob-run")
        self._stopping = threading.Event()
        """Shared with every JobRun as its ``stop``: set, the loop ends and runs skip their remaining tables."""
        self._wake = threading.Event()
        self._listeners: list[Callable[[], None]] = []

    # ---- lifetime

    def stop(self) -> None:
        """Stop accepting runs and let the running ones finish their current table (thread- and signal-safe)."""
        self._stopping.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            if self._stopping.is_set():
                log.warning("second %s: aborting at once", signal.Signals(signum).name)
                os._exit(EXIT_INTERRUPTED)
            log.info("%s: stopping; running runs finish their current table", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def serve(self) -> None:
        """Run until :meth:`stop`; returns once every started run has ended."""
        try:
            self._start()
            while not self._stopping.is_set():
                now = self.clock.now()
                for job in self.jobs:
                    self._turn(job, now)
                self.clock.sleep(self._sleep_s(self.clock.now()), self._wake)
                self._wake.clear()
        finally:
            self._shutdown()

    def _start(self) -> None:
        now = self.clock.now()
        for job in self.jobs:
            job.store = job.open_store()
            self._guarded(partial(_sweep_orphans, job.store, job.loaded.scope))
            for rule in job.rules:
                last = load_last_fire(job.store, job.loaded.scope, rule)
                if is_missed(rule, last, now):  # due at once: the first turn runs it, labelled "missed"
                    job.missed.add(rule.key)
                if last is None:  # first served: count from now, so that a later downtime is noticed
                    save_last_fire(job.store, job.loaded.scope, rule, now)
                    last = now
                self._plan(job, rule, last)
            for watcher in job.watchers:
                watcher.start(on_event=self._wake.set)
            log.info("serving job=%s (%s): %s", job.name, job.loaded.path, _describe(job))

    def _shutdown(self) -> None:
        self._stopping.set()
        for job in self.jobs:
            for watcher in job.watchers:
                watcher.stop()
        running = [j.name for j in self.jobs if j.busy]
        if running:
            log.info("waiting for running runs to finish their current table: %s", ", ".join(running))
        self._pool.shutdown(wait=True, cancel_futures=True)
        for job in self.jobs:
            if job.store is not None:
                job.store.close()
                job.store = None
        log.info("stopped")

    # ---- one turn

    def _turn(self, job: ServedJob, now: datetime) -> None:
        due = [r for r in job.rules if r.key in job.next_due and job.next_due[r.key] <= now]
        if due:
            label = schedule_label(due, missed=any(r.key in job.missed for r in due))
            job.missed.clear()
            for rule in due:
                fired = recorded_fire(rule, job.next_due[rule.key], now)
                self._plan(job, rule, fired)
                self._guarded(partial(save_last_fire, self._store(job), job.loaded.scope, rule, fired))
            if job.busy:
                self._guarded(lambda: self._record_skip(job, label, now))
            else:
                self._submit(job, label)
        for watcher in job.watchers:
            job.pending_files.extend(_display_path(p, job.loaded.base_dir) for p in watcher.take())
        if job.pending_files and not job.busy:
            label = files_label(list(dict.fromkeys(job.pending_files)))
            job.pending_files.clear()
            self._submit(job, label)
        if job.run_requested and not job.busy:
            job.run_requested = False
            self._submit(job, RUN_NOW_LABEL)

    @staticmethod
    def _plan(job: ServedJob, rule: ScheduleRule, after: datetime) -> None:
        """The rule's next fire after ``after``; a rule with none left is dropped (said once), not a crash."""
        due = rule.next_after(after)
        if due is not None:
            job.next_due[rule.key] = due
        else:
            job.next_due.pop(rule.key, None)
            log.warning("job=%s schedule %s has no fire time after %s: it no longer fires", job.name,
                        rule.expression, after.isoformat())

    def _sleep_s(self, now: datetime) -> float:
        waits = [self.tick_s]
        for job in self.jobs:
            waits.extend((due - now).total_seconds() for due in job.next_due.values())
            waits.extend(w for w in (watcher.due_in() for watcher in job.watchers) if w is not None)
        return max(0.0, min(waits))

    def _store(self, job: ServedJob) -> StateStore:
        assert job.store is not None, "the loop opens the stores before its first turn"
        return job.store

    @staticmethod
    def _guarded(action: Callable[[], None]) -> None:
        """A state store hiccup must not end the service: log it, the next fire tries again."""
        try:
            action()
        except CopyjobError as exc:
            log.warning("state store: %s", redact(str(exc)))

    # ---- runs

    def _submit(self, job: ServedJob, label: str) -> None:
        if self._stopping.is_set():
            return
        job.running_label = label
        job.running = self._pool.submit(self._run, job, label)
        job.running.add_done_callback(lambda _: self._ended())
        self._notify()

    def _ended(self) -> None:
        self._wake.set()
        self._notify()

    # ---- for the monitor (copyjob.monitor)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """``listener`` is called (from any thread; it must be quick) when a run is started or has ended."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def request_run(self, name: str) -> bool:
        """Start a run of job ``name`` labelled ``manual: monitor`` on the loop's next turn (thread-safe).
        False when the job is running or a run is already asked for: runs of one job never overlap."""
        job = next(j for j in self.jobs if j.name == name)
        if job.busy or job.run_requested or self._stopping.is_set():
            return False
        job.run_requested = True
        self._wake.set()
        return True

    def _run(self, job: ServedJob, label: str) -> None:
        with log_context(job=job.name):
            self._run_logged(job, label)

    def _run_logged(self, job: ServedJob, label: str) -> None:
        from copyjob.runner import JobRun

        started = time.monotonic()
        log.info("job=%s trigger=%r status=started", job.name, label, extra={"event": "run_started"})
        if not self._job_file_current(job, label):
            return
        job_run = JobRun(job.loaded, job.open_store, Progress(stream=_Discard(), live=False), trigger=label,
                         lock_wait_s=0.0, stop=self._stopping)
        try:
            record = job_run.run()
        except CopyjobError as exc:  # the job does not fit its systems (e.g. a table is gone): nothing written
            lines = [str(p) for p in exc.problems] if isinstance(exc, JobFileError) else [str(exc)]
            error = redact("; ".join(lines))
            self._guarded(lambda: self._record_failed(job, label, error))
            log.error("job=%s trigger=%r status=failed rows=0 error=%s", job.name, label, error,
                      extra={"event": "run_error", "error": error, "rows": 0})
            return
        except Exception as exc:  # a bug must not take the service down with it
            error = redact(repr(exc))
            log.exception("job=%s trigger=%r status=error error=%s", job.name, label, error,
                          extra={"event": "run_error", "error": error})
            return
        finally:
            job_run.close()
        rows = sum(t.rows_written for t in record.tables)
        errors = "; ".join(f"{t.table}: {t.error}" for t in record.tables if t.status == "failed")
        message = "job=%s trigger=%r status=%s rows=%d duration=%.2fs"
        values: tuple[Any, ...] = (job.name, label, record.status, rows, time.monotonic() - started)
        fields: dict[str, Any] = {"event": "run_finished", "rows": rows, "run_id": record.run_id}
        if record.status in ("failed", "interrupted"):
            fields["error"] = redact(errors) or record.status
            log.error(message + " error=%s", *values, fields["error"], extra=fields)
        else:
            log.info(message, *values, extra=fields)

    def _job_file_current(self, job: ServedJob, label: str) -> bool:
        """Read the job file again when it changed since it was loaded. An edit that left it invalid is a failed
        run in history (each fire until it is fixed), logged at ERROR; the other jobs go on. True: run it."""
        signature = _signature(job.loaded.path)
        if job.reload is None or signature == job.signature:
            return True
        try:
            loaded = job.reload()
        except CopyjobError as exc:
            lines = [str(p) for p in exc.problems] if isinstance(exc, JobFileError) else [str(exc)]
            error = redact("job file: " + "; ".join(lines))
            self._guarded(lambda: self._record_failed(job, label, error))
            log.error("job=%s trigger=%r status=failed rows=0 error=%s", job.name, label, error,
                      extra={"event": "job_file_error", "error": error, "rows": 0})
            return False
        if loaded.job.schedules != job.loaded.job.schedules or loaded.job.triggers != job.loaded.job.triggers:
            log.warning("job=%s: schedules and triggers changed in %s: they apply when serve restarts",
                        job.name, job.loaded.path)
        log.info("job=%s: %s changed: runs use the edited job", job.name, job.loaded.path,
                 extra={"event": "job_file_reloaded"})
        job.loaded, job.signature = loaded, signature
        return True

    def _record_failed(self, job: ServedJob, label: str, error: str) -> None:
        """A run that could not start (its job file is invalid), recorded with every table failed by ``error``."""
        from copyjob.runs import new_run_id

        now = self.clock.now()
        run = RunRecord(run_id=new_run_id(), job=job.loaded.scope, started_at=now, finished_at=now, status="failed",
                        trigger=label, tables=[TableRunRecord(table=t.spec.target_name, mode=t.mode,
                                                              status="failed", error=error)
                                               for t in job.loaded.tables])
        store = job.open_store()
        try:
            store.finish_run(run)
        finally:
            store.close()

    def _record_skip(self, job: ServedJob, label: str, now: datetime) -> None:
        """The job's previous run is still going: record this fire as a skipped run, as JobRun does when it
        finds the lock held by another process."""
        from copyjob.runs import new_run_id

        store = self._store(job)
        holder = store.lock_info(job.loaded.scope)
        why = holder.describe() if holder else f"started by {job.running_label}"
        error = f"skipped: another run of this job is in progress ({why})"
        run = RunRecord(run_id=new_run_id(), job=job.loaded.scope, started_at=now, finished_at=now, status="skipped",
                        trigger=label, tables=[TableRunRecord(table=t.spec.target_name, mode=t.mode,
                                                              status="skipped", error=error)
                                               for t in job.loaded.tables])
        store.finish_run(run)
        log.info("job=%s trigger=%r status=skipped rows=0 (%s)", job.name, label, why)


def _sweep_orphans(store: StateStore, scope: str) -> None:
    """Taking the job's run lock for a moment marks its runs left ``running`` by a dead process ``interrupted``
    (the store does it on every lock taken); a lock held by a live run is left alone."""
    lock = store.acquire_lock(scope, "serve start", wait_s=0.0)
    if lock is not None:
        lock.release()


def _describe(job: ServedJob) -> str:
    parts = [f"schedule {r.expression}" for r in job.rules]
    parts += [f"file_arrival {w.folder} {w.pattern}{' (polling)' if w.polling else ''}" for w in job.watchers]
    return "; ".join(parts) or "no schedules or triggers"
