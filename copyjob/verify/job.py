"""Verify the tables of a job (:func:`verify_job`) and record the outcome: a run in the history (trigger
``verify``) and each table's last verification in the state store's job meta (``verify:<table>``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from copyjob.core.contracts import RunRecord, StateStore, TableRunRecord
from copyjob.core.errors import CopyjobError, error_text
from copyjob.verify.report import TableReport
from copyjob.verify.table import VerifyOptions, verify_table

if TYPE_CHECKING:
    from copyjob.loader import LoadedJob

META_PREFIX = "verify:"


def verify_job(loaded: LoadedJob, table_names: list[str] | None, options: VerifyOptions,
               on_table: Callable[[TableReport], None] | None = None) -> list[TableReport]:
    """Compare each chosen table of the job (all when none is named)."""
    from copyjob.connectors import destination_capabilities, open_destination, open_source
    from copyjob.filesets import endpoint_url
    from copyjob.preflight import check_tables
    from copyjob.runs import select_tables

    job = loaded.job
    tables = select_tables(loaded, table_names)
    destination_url = endpoint_url(job.destination, loaded.base_dir)
    source = open_source(endpoint_url(job.source, loaded.base_dir))
    try:
        plans = check_tables(loaded, tables, source, destination_capabilities(destination_url))
        destination = open_destination(destination_url)
        try:
            reports: list[TableReport] = []
            for plan in plans:
                try:
                    report = verify_table(plan, job.job, source, destination, options,
                                          lambda: (source.clone(), open_destination(destination_url)))
                except CopyjobError as exc:
                    report = TableReport(table=plan.table.target_name, source=plan.table.name,
                                         mode=plan.table.mode, error=error_text(exc))
                reports.append(report)
                if on_table is not None:
                    on_table(report)
            return reports
        finally:
            destination.close()
    finally:
        source.close()


def record(store: StateStore, scope: str, run_id: str, started: datetime, reports: list[TableReport]) -> None:
    """A run of trigger ``verify`` in the history, and each table's last verification."""
    finished = datetime.now(UTC)
    run = RunRecord(run_id=run_id, job=scope, started_at=started, trigger="verify")
    store.start_run(run)
    for r in reports:
        run.tables.append(TableRunRecord(table=r.table, mode="verify", status="ok" if r.ok else "failed",
                                         rows_read=r.rows_source, rows_written=r.repaired or 0,
                                         duration_s=r.duration_s, error=None if r.ok else r.summary(),
                                         note=r.summary()))
        store.set_meta(scope, META_PREFIX + r.table, json.dumps(
            {"at": finished.isoformat(timespec="seconds"), "result": r.result, "summary": r.summary()}))
    run.finished_at = finished
    run.status = "ok" if all(r.ok for r in reports) else "failed"
    store.finish_run(run)


def last_verification(store: StateStore, scope: str, table: str) -> dict[str, str] | None:
    """``{"at", "result", "summary"}`` of the table's last verification, or None."""
    text = store.get_meta(scope, META_PREFIX + table)
    return None if text is None else dict(json.loads(text))
