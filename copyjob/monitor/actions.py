"""What the page's buttons do: run a job now, reset a table.

Under ``serve`` a run is asked of serve's loop (:meth:`copyjob.serve.Server.request_run`), so that it is one of
serve's runs: never two of a job at once, stopped with the others. Under ``monitor`` it runs in a thread of the
monitor, taking the job's lock as ``copyjob run --wait 0`` does (a run held by another process is recorded as
skipped). A reset is what ``copyjob reset --table`` does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from copyjob.core.errors import CopyjobError
from copyjob.core.redaction import redact
from copyjob.monitor.feed import Watched

if TYPE_CHECKING:
    from copyjob.serve import Server

log = logging.getLogger("copyjob.monitor")


class Refused(Exception):
    """An action that cannot be done now; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RunStarter(Protocol):
    def run_now(self, job: Watched) -> None:
        """Start a run of ``job`` (raise :class:`Refused` when it cannot start)."""


def reset_table(job: Watched, table: str) -> list[str]:
    """Make the next run of ``table`` a full copy; returns the tables reset."""
    from copyjob.runs import new_run_id

    names = [t.spec.target_name for t in job.loaded.tables]
    if table not in names:
        raise Refused(f"job {job.name} has no table {table!r}", 404)
    store = job.open_store()
    try:
        job.loaded.ledger(store).reset([table], new_run_id())
    finally:
        store.close()
    log.info("job=%s table=%s reset from the monitor: the next run is a full copy", job.name, table)
    return [table]


class ServeRuns:
    """``serve --http``: the loop starts the run (:meth:`copyjob.serve.Server.request_run`)."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def run_now(self, job: Watched) -> None:
        if not self.server.request_run(job.name):
            raise Refused(f"job {job.name} is running (or about to)", 409)


class ThreadRuns:
    """``copyjob monitor``'s runs: one at a time per job, in the monitor's own threads."""

    def __init__(self, on_change: Callable[[], None], workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="copyjob-monitor-run")
        self._running: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._on_change = on_change
        self._stop = threading.Event()

    def run_now(self, job: Watched) -> None:
        with self._lock:
            current = self._running.get(job.name)
            if current is not None and not current.done():
                raise Refused(f"job {job.name} is running", 409)
            future = self._pool.submit(self._run, job)
            self._running[job.name] = future
        future.add_done_callback(lambda _: self._on_change())

    def _run(self, job: Watched) -> None:
        from copyjob.progress import Progress
        from copyjob.runner import JobRun
        from copyjob.serve import RUN_NOW_LABEL, _Discard

        job_run = JobRun(job.loaded, job.open_store, Progress(stream=_Discard(), live=False), trigger=RUN_NOW_LABEL,
                         lock_wait_s=0.0, stop=self._stop)
        try:
            record = job_run.run()
            log.info("job=%s trigger=%r status=%s", job.name, RUN_NOW_LABEL, record.status)
        except CopyjobError as exc:
            log.error("job=%s trigger=%r status=error error=%s", job.name, RUN_NOW_LABEL, redact(str(exc)))
        except Exception:  # a bug must not take the monitor down with it
            log.exception("job=%s trigger=%r status=error", job.name, RUN_NOW_LABEL)
        finally:
            job_run.close()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
