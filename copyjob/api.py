"""copyjob from Python: load a job (a file or a dict), run it, read its status and history, as typed results.

::

    import copyjob

    job = copyjob.load_job("job.yaml", env="prod")          # or copyjob.load_job({"job": ..., ...})
    result = copyjob.run(job)                               # RunResult; tables may have failed
    for t in result.tables:
        print(t.table, t.mode, t.rows_written, t.status, t.watermark_after)
    copyjob.status(job)                                     # StatusResult: per table, what the next run does
    copyjob.history(job, limit=5)                           # [RunResult], newest first

Errors are the copyjob hierarchy (:mod:`copyjob.core.errors`): a bad job raises ``JobFileError`` naming each
field (``file:line: field: problem`` from a file; ``field: problem`` from a dict), an unreachable system
``ConnectionFailed``, and so on. A table that fails during a run does not raise: its ``status`` is ``failed``
and ``error`` says why (``RunResult.ok`` is False).

The state (watermarks, positions, history) lives where the CLI keeps it: ``state=`` (a SQLite path or a
PostgreSQL URL), else the job's ``state:``, else ``.copyjob/state.db`` beside the job file (for a dict: in
the current directory, which also anchors the dict's relative paths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copyjob.core.errors import JobFileError

if TYPE_CHECKING:
    from copyjob.core.contracts import RunRecord, StateStore, TableState
    from copyjob.loader import LoadedJob

DICT_NAME = "<dict>"
"""What a job given as a dict is called where a file name would be."""


@dataclass(frozen=True)
class Job:
    """A loaded, validated job."""

    name: str
    tables: tuple[str, ...]
    """Target names of the job's tables, in the job's order."""
    destination: str
    """The destination's system and place, without credentials (the state is kept under it)."""
    path: Path | None
    """The job file; None for a job given as a dict."""
    env: str | None
    loaded: LoadedJob = field(repr=False, compare=False)
    """The job as the engine sees it (``copyjob.loader.LoadedJob``): not part of the stable API."""


@dataclass(frozen=True)
class TableResult:
    """One table of a run."""

    table: str
    """Target name."""
    source: str | None
    """Source name (None when not known: a table the job no longer names)."""
    mode: str
    status: str
    """``ok``, ``failed``, ``skipped``, ``stopped`` or ``interrupted``."""
    rows_read: int
    rows_written: int
    duration_s: float
    watermark_before: Any
    watermark_after: Any
    error: str | None
    note: str | None


@dataclass(frozen=True)
class RunResult:
    run_id: str
    job: str
    destination: str | None
    status: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    tables: tuple[TableResult, ...]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class TableStatus:
    table: str
    source: str | None
    mode: str
    last_run_at: datetime | None
    last_outcome: str | None
    last_error: str | None
    watermark: Any
    next_run: str
    """``full``, ``incremental``, ``snapshot`` or ``stream``, with the reason when an edit starts it over."""


@dataclass(frozen=True)
class StatusResult:
    job: str
    destination: str
    tables: tuple[TableStatus, ...]


def load_job(path_or_dict: str | Path | Mapping[str, Any], *, env: str | None = None,
             variables: str | Path | Mapping[str, str] | None = None) -> Job:
    """Read and validate a job. ``variables``: a variables file (default: ``variables.yaml`` beside the job
    file, its ``default`` set and the one ``env`` names), or a mapping of values; ``${NAME}`` not found there
    comes from the environment. Raises :class:`~copyjob.core.errors.JobFileError` listing every problem."""
    from copyjob.loader import load_document
    from copyjob.loader import load_job as load_file
    from copyjob.variables import VariableLibrary, load_library

    if isinstance(path_or_dict, Mapping):
        path = Path.cwd() / DICT_NAME
        if isinstance(variables, Mapping):
            library = VariableLibrary(values={str(k): str(v) for k, v in variables.items()})
        elif variables is not None:
            library = load_library(path, Path(variables), env)
        else:
            library = VariableLibrary()
        try:
            loaded = load_document(path_or_dict, {}, path=path, library=library, env=env)
        except JobFileError as exc:
            raise _without_file(exc) from None
        return _job(loaded, from_dict=True)
    if isinstance(variables, Mapping):
        raise TypeError("variables: a file path for a job file (values in a mapping only with a dict job)")
    loaded = load_file(Path(path_or_dict), variables=Path(variables) if variables else None, env=env)
    return _job(loaded, from_dict=False)


def run(job: Job, *, tables: Sequence[str] | None = None, state: str | None = None) -> RunResult:
    """Run the job once (the tables named, by source or target name; all when None) and return its result."""
    from copyjob.progress import Progress
    from copyjob.runner import JobRun

    job_run = JobRun(job.loaded, lambda: _store(job, state), Progress(live=False))
    try:
        record = job_run.run(list(tables) if tables else None)
    finally:
        job_run.close()
    return _run_result(record, _sources(job))


def status(job: Job, *, state: str | None = None) -> StatusResult:
    """Each table's state: last outcome, watermark and what its next run does. Reads only the state store."""
    from copyjob.summary import edit_resets, status_rows

    store = _store(job, state)
    try:
        loaded = job.loaded
        states: list[tuple[str, str, TableState]] = [
            (t.spec.target_name, t.mode, store.load(loaded.scope, t.spec.target_name)) for t in loaded.tables]
        reasons = edit_resets(store.load_all(loaded.scope),
                              {t.spec.target_name: t.definition() for t in loaded.tables})
    finally:
        store.close()
    sources = _sources(job)
    rows = []
    for row, (_, _, s) in zip(status_rows(states, reasons), states, strict=True):
        rows.append(TableStatus(table=row["table"], source=sources.get(row["table"]), mode=row["mode"],
                                last_run_at=s.last_run_at, last_outcome=s.last_status, last_error=s.last_error,
                                watermark=s.watermark, next_run=row["next_run"]))
    return StatusResult(job=job.name, destination=job.destination, tables=tuple(rows))


def history(job: Job, *, state: str | None = None, limit: int = 20) -> list[RunResult]:
    """The job's past runs into its destination, newest first."""
    store = _store(job, state)
    try:
        runs = store.history(job.loaded.scope, limit=limit)
    finally:
        store.close()
    sources = _sources(job)
    return [_run_result(r, sources) for r in runs]


def _job(loaded: LoadedJob, *, from_dict: bool) -> Job:
    return Job(name=loaded.job.job, tables=tuple(t.spec.target_name for t in loaded.tables),
               destination=loaded.destination_identity, path=None if from_dict else loaded.path, env=loaded.env,
               loaded=loaded)


def _without_file(exc: JobFileError) -> JobFileError:
    """The same problems named by field only: a dict has no file or lines."""
    problems = []
    for p in exc.problems:
        text = str(p)
        if p.file:
            text = text.removeprefix(f"{p.file}:{p.line}: " if p.line else f"{p.file}: ")
        if p.field:
            text = text.removeprefix(f"{p.field}: ")
        problems.append(JobFileError(text, field=p.field))
    return JobFileError.of(problems)


def _store(job: Job, state: str | None) -> StateStore:
    """The store the CLI would use (``--state``, the job's ``state:``, the default beside the job file)."""
    return job.loaded.state_store(state)


def _sources(job: Job) -> dict[str, str]:
    return {t.spec.target_name: t.spec.name for t in job.loaded.tables}


def _run_result(record: RunRecord, sources: Mapping[str, str]) -> RunResult:
    from copyjob.core.scope import split_scope

    name, destination = split_scope(record.job)
    return RunResult(
        run_id=record.run_id, job=name, destination=destination, status=record.status, trigger=record.trigger,
        started_at=record.started_at, finished_at=record.finished_at,
        tables=tuple(TableResult(table=t.table, source=sources.get(t.table), mode=t.mode, status=t.status,
                                 rows_read=t.rows_read, rows_written=t.rows_written, duration_s=t.duration_s,
                                 watermark_before=t.watermark_before, watermark_after=t.watermark_after,
                                 error=t.error, note=t.note) for t in record.tables))


__all__ = ["Job", "RunResult", "StatusResult", "TableResult", "TableStatus", "history", "load_job", "run",
           "status"]
