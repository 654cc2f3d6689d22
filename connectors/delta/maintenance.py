"""``copyjob maintain`` for a Delta table: compact small files (delta-rs ``optimize.compact``), then vacuum
files no longer referenced that are older than the retention (``vacuum``; Delta's default 7 days).

Change capture merges commit often and rewrite the files they touch, so a table collects many small files;
compaction rewrites them into files of about ``target_file_bytes`` in one commit (readers are not disturbed).
Vacuum honours the table's ``delta.deletedFileRetentionDuration``: a shorter retention is refused (lower the
table property first), because readers of older versions still need those files.

The compaction commit carries the table's newest state markers forward (the same JSON and transaction
versions), so a marker never depends on an old commit whose log entry Delta may clean up."""

from __future__ import annotations

import math
from typing import Any

from copyjob.connectors.delta.errors import short, translated
from copyjob.connectors.delta.markers import carried_forward

from copyjob.core.contracts import MaintenanceReport, MaintenanceSettings
from copyjob.core.errors import ConfigurationError
from copyjob.core.schema import TableName


def maintain(dt: Any, table: TableName, settings: MaintenanceSettings) -> MaintenanceReport:
    before = _file_sizes(dt, table)
    actions: list[str] = []
    if settings.compact:
        small = sum(1 for size in before if size < settings.target_file_bytes)
        if settings.dry_run:
            actions.append(f"would compact {small} file(s) smaller than {_mib(settings.target_file_bytes)}")
        elif small > 1:
            props = carried_forward(dt, table)
            metrics = translated(lambda: dt.optimize.compact(target_size=settings.target_file_bytes,
                                                             commit_properties=props), table)
            actions.append(f"compacted {metrics.get('numFilesRemoved', 0)} file(s) into "
                           f"{metrics.get('numFilesAdded', 0)}")
        else:
            actions.append("nothing to compact")
    hours = max(0, math.ceil(settings.retention_s / 3600))
    removed = translated(lambda: _vacuum(dt, table, hours, settings.dry_run), table)
    verb = "would remove" if settings.dry_run else "removed"
    actions.append(f"vacuum: {verb} {len(removed)} unreferenced file(s) older than {hours} h")
    dt.update_incremental()
    after = _file_sizes(dt, table)
    return MaintenanceReport(table=table, files_before=len(before), files_after=len(after), actions=tuple(actions))


def _vacuum(dt: Any, table: TableName, hours: int, dry_run: bool) -> list[str]:
    try:
        removed: list[str] = dt.vacuum(retention_hours=hours, dry_run=dry_run, enforce_retention_duration=True)
    except Exception as exc:
        text = short(exc)
        if "retention" in text.lower():
            raise ConfigurationError(
                f"Delta table {table}: a retention of {hours} hour(s) is shorter than the table's "
                f"delta.deletedFileRetentionDuration ({text}); lower that table property first, knowing that "
                "readers of older versions lose their files") from exc
        raise
    return removed


def _file_sizes(dt: Any, table: TableName) -> list[int]:
    actions = translated(lambda: dt.get_add_actions(flatten=True), table)
    return [int(v) for v in actions.column("size_bytes").to_pylist()] if actions.num_rows else []


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"
