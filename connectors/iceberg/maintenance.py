"""``copyjob maintain`` for an Iceberg table: compact small data files, expire old snapshots, delete the files
only expired snapshots referenced.

pyiceberg 0.12 has no rewrite-data-files action: compaction reads the table and overwrites it in one commit
(the table is held in memory while it is rewritten), with files of ``target_file_bytes``. Its snapshots carry
the markers forward, so ``read_marker`` still finds them. Expiry removes the snapshots older than the
retention, except the chain from the current snapshot back to the newest that carries markers; pyiceberg removes them
from the metadata only, so the data files, manifests and manifest lists that no remaining snapshot references
are deleted here.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import TYPE_CHECKING

from copyjob.connectors.iceberg.markers import newest_markers

from copyjob.core.contracts import MaintenanceReport, MaintenanceSettings
from copyjob.core.schema import TableName

if TYPE_CHECKING:
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

TARGET_SIZE_PROPERTY = "write.target-file-size-bytes"


def maintain(table: Table, name: TableName, settings: MaintenanceSettings) -> MaintenanceReport:
    before = _data_files(table)
    actions: list[str] = []
    small = [f for f in before if f[1] < settings.target_file_bytes]
    if settings.compact and len(small) >= 2:
        actions.append(f"rewrite {len(before)} data files ({len(small)} smaller than {settings.target_file_bytes} "
                       "bytes)")
        if not settings.dry_run:
            _compact(table, settings.target_file_bytes)
            table = table.refresh()
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=settings.retention_s)
    keep = _marker_chain(table)
    expired = [s for s in table.snapshots()
               if s.timestamp_ms < cutoff.timestamp() * 1000 and s.snapshot_id not in keep]
    if expired:
        actions.append(f"expire {len(expired)} snapshots older than {cutoff.isoformat(timespec='seconds')}")
        if not settings.dry_run:
            removed = _expire(table, expired)
            table = table.refresh()
            if removed:
                actions.append(f"delete {removed} files no remaining snapshot references")
    after = before if settings.dry_run else _data_files(table)
    return MaintenanceReport(table=name, files_before=len(before), files_after=len(after), actions=tuple(actions))


def _data_files(table: Table) -> list[tuple[str, int]]:
    if table.current_snapshot() is None:
        return []
    return [(t.file.file_path, t.file.file_size_in_bytes) for t in table.scan().plan_files()]


def _marker_chain(table: Table) -> set[int]:
    """The snapshots from the current one back to the newest that carries markers (``read_marker`` walks them)."""
    _, walked = newest_markers(table)
    return {s.snapshot_id for s in walked}


def _compact(table: Table, target_bytes: int) -> None:
    data = table.scan().to_arrow()
    txn = table.transaction()
    txn.set_properties({TARGET_SIZE_PROPERTY: str(target_bytes)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        txn.overwrite(data, snapshot_properties=newest_markers(table)[0])
    txn.commit_transaction()


def _files_of(table: Table, snapshots: list[Snapshot]) -> set[str]:
    """Every data file, manifest and manifest list the snapshots reference."""
    found: set[str] = set()
    for snapshot in snapshots:
        found.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            found.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                found.add(entry.data_file.file_path)
    return found


def _expire(table: Table, expired: list[Snapshot]) -> int:
    ids = {s.snapshot_id for s in expired}
    remaining = [s for s in table.snapshots() if s.snapshot_id not in ids]
    candidates = _files_of(table, expired) - _files_of(table, remaining)
    table.maintenance.expire_snapshots().by_ids(sorted(ids)).commit()
    for path in sorted(candidates):
        table.io.delete(path)
    return len(candidates)
