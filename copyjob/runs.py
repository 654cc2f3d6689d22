"""What every run of a job shares, whichever transport moves its data: run ids, the tables a run covers, and
the context an orchestrator works in (:class:`RunContext`, implemented by :class:`copyjob.runner.JobRun`).

Orchestrators (``copyjob.cdc``, ``copyjob.kafka_pipeline``, ``copyjob.kafka_stream``) depend on this module,
not on the runner, so the runner can choose among them without an import cycle."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from copyjob.core.errors import UsageError

if TYPE_CHECKING:
    from copyjob.core.contracts import RunRecord, StateStore
    from copyjob.jobfile import ResolvedTable
    from copyjob.loader import LoadedJob
    from copyjob.offsets.ledger import Ledger
    from copyjob.progress import Progress


def new_run_id() -> str:
    """Sortable by time: markers and state compare run ids to know which is newer."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f") + "-" + secrets.token_hex(3)


def select_tables(loaded: LoadedJob, names: list[str] | None) -> list[ResolvedTable]:
    """The job's tables named by ``--table`` (source or target names), all when none is named."""
    tables = loaded.tables
    if not names:
        return tables
    chosen: list[ResolvedTable] = []
    for name in names:
        match = [t for t in tables if name in (t.spec.name, t.spec.target_name)]
        if not match:
            known = ", ".join(t.spec.name for t in tables)
            raise UsageError(f"--table {name}: not in the job (tables: {known})")
        chosen.extend(m for m in match if m not in chosen)
    return chosen


class RunContext(Protocol):
    """One run of a job as its orchestrator sees it."""

    loaded: LoadedJob
    progress: Progress
    trigger: str
    lock_wait_s: float
    stop: threading.Event
    cdc_until_stopped: bool
    """cdc tables stream until ``stop`` instead of up to the log's end when the run began."""

    @property
    def store(self) -> StateStore: ...

    @property
    def ledger(self) -> Ledger: ...

    def skip(self, run: RunRecord, tables: list[ResolvedTable]) -> RunRecord:
        """Record ``run`` as skipped: another run of the job holds its lock."""

    def fail_all(self, run: RunRecord, tables: list[ResolvedTable], error: str) -> RunRecord:
        """Record ``run`` with every table failed by ``error`` (an endpoint could not be opened)."""

    def record_failure(self, key: str, run_id: str, error: str) -> None: ...

    def run_direct(self, table_names: list[str] | None = None) -> RunRecord:
        """The run with ``transport: direct`` (one process reads and writes)."""
