"""What ``copyjob check`` alerts on: the problems of one job, read from its run history and its CDC slot.

A problem is one of:

- ``failed``: the latest run of a table (skipped runs aside) failed, or the latest run of the job failed or
  was interrupted without a table to blame (e.g. its job file was invalid);
- ``stale``: no successful run of a table within its ``check.max_age`` (the table's, else the job's);
- ``cdc``: the change capture lags above ``cdc.max_lag_bytes``/``max_lag_seconds``, its slot is lost or gone,
  or the slot cannot be read (computed by the CLI, passed in as the ``cdc_status`` mapping).

Only the history is read: checking writes nothing and reaches no system but the CDC source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from copyjob.core.urls import redact

if TYPE_CHECKING:
    from copyjob.core.contracts import RunRecord, StateStore
    from copyjob.jobfile import CheckSettings
    from copyjob.loader import LoadedJob

HISTORY_WINDOW = 500
"""Runs read back to find each table's latest outcome and last success."""
_SETTLED = frozenset({"ok", "failed", "interrupted", "stopped"})
"""Run outcomes that say something about the job's health ("running" and "skipped" say nothing)."""


@dataclass(frozen=True)
class Problem:
    job: str
    kind: str  # "failed" | "stale" | "cdc"
    message: str
    table: str | None = None
    run_id: str | None = None

    def line(self) -> str:
        where = f"{self.job}.{self.table}" if self.table else self.job
        return f"{self.kind}: {where}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def job_problems(loaded: LoadedJob, store: StateStore, cdc_status: Mapping[str, Any] | None = None,
                 now: datetime | None = None, max_age: CheckSettings | None = None) -> list[Problem]:
    """Every problem of the job, tables in the job file's order; ``max_age`` (``check --max-age``) replaces
    the job file's thresholds."""
    now = now or datetime.now(UTC)
    runs = [r for r in store.history(loaded.scope, limit=HISTORY_WINDOW) if r.status in _SETTLED]
    job = loaded.job.job
    problems = _failures(job, loaded, runs) + _staleness(job, loaded, runs, now, max_age)
    if cdc_status is not None:
        if cdc_status.get("error"):
            problems.append(Problem(job, "cdc", f"cannot read the replication slot: {cdc_status['error']}"))
        problems.extend(Problem(job, "cdc", warning) for warning in cdc_status.get("warnings", []))
    return problems


def _failures(job: str, loaded: LoadedJob, runs: list[RunRecord]) -> list[Problem]:
    problems: list[Problem] = []
    for name in _table_keys(loaded):
        latest = _latest(runs, name, lambda status: status != "skipped")
        if latest is not None and latest[1].status == "failed":
            run, record = latest
            problems.append(Problem(job, "failed", f"run {run.run_id} ({run.trigger}) failed: "
                                    f"{redact(record.error or 'no error recorded')}", table=name,
                                    run_id=run.run_id))
    if runs and runs[0].status in ("failed", "interrupted") and not problems:
        run = runs[0]
        errors = sorted({t.error for t in run.tables if t.error and t.status == "failed"})
        why = f": {redact('; '.join(errors))}" if errors else ""
        problems.append(Problem(job, "failed", f"run {run.run_id} ({run.trigger}) {run.status}{why}",
                                run_id=run.run_id))
    return problems


def _staleness(job: str, loaded: LoadedJob, runs: list[RunRecord], now: datetime,
               override: CheckSettings | None) -> list[Problem]:
    problems: list[Problem] = []
    for table in loaded.tables:
        settings = override or (table.spec.check if table.spec.check and table.spec.check.max_age
                                else loaded.job.check)
        max_age = settings.max_age_s
        if max_age is None:
            continue
        name = table.spec.target_name
        success = _latest(runs, name, lambda status: status == "ok")
        if success is None:
            problems.append(Problem(job, "stale", f"no successful run (max_age {settings.max_age})", table=name))
            continue
        run = success[0]
        age = (now - _aware(run.finished_at or run.started_at)).total_seconds()
        if age > max_age:
            problems.append(Problem(job, "stale", f"last successful run {run.run_id} ended {_ago(age)} ago, "
                                    f"more than max_age {settings.max_age}", table=name, run_id=run.run_id))
    return problems


def _table_keys(loaded: LoadedJob) -> list[str]:
    return [t.spec.target_name for t in loaded.tables]


def _latest(runs: list[RunRecord], table: str, wanted: Any) -> tuple[RunRecord, Any] | None:
    """The newest (run, table record) of ``table`` whose status is ``wanted``."""
    for run in runs:
        for record in run.tables:
            if record.table == table and wanted(record.status):
                return run, record
    return None


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _ago(seconds: float) -> str:
    if seconds >= 7200:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


__all__ = ["Problem", "job_problems"]
