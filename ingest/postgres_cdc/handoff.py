"""The gap-free handoff from snapshot to stream.

``CREATE_REPLICATION_SLOT … LOGICAL pgoutput (SNAPSHOT 'export')`` returns the slot's *consistent point* C and
the name of a snapshot that sees exactly the transactions committed before C; the slot streams exactly those
committed at or after C. Readers import the snapshot with ``SET TRANSACTION SNAPSHOT`` at the start of a
REPEATABLE READ transaction (every parallel reader imports the same one), so the snapshot and the stream
meet at C with no gap and no overlap. The snapshot stays importable only while the replication connection
that exported it stays open and idle, so :class:`ExportedSnapshot` keeps it open until the snapshot is read.

A table added to the job later gets its own handoff while the job's slot keeps streaming: a *temporary*
slot (dropped by the server when its connection closes) exports a snapshot at its own consistent point C2,
the table is read from it, and the stream, which goes on from the job's slot, skips that table's changes
committed before C2 (they are in the snapshot) and applies the rest.

Steps, as logged:
1. create the slot (or the temporary slot) and export its snapshot;
2. read the tables inside transactions that use the snapshot (the caller's ``copy``);
3. close the replication connection (the snapshot is released; a temporary slot is dropped).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from copyjob.ingest.postgres_cdc._replication import ReplicationConnection, format_lsn, parse_lsn

from copyjob.core.contracts import SnapshotResult

log = logging.getLogger(__name__)


def snapshot_position(lsn: int) -> dict[str, int]:
    """The position a snapshot at ``lsn`` stands for: before every change committed at or after ``lsn``."""
    return {"lsn": lsn, "seq": -1}


class ExportedSnapshot:
    """Step 1 at construction; :meth:`run` is step 2; :meth:`close` step 3."""

    def __init__(self, params: Mapping[str, Any], where: str, slot: str, *, temporary: bool) -> None:
        self.slot = f"{slot[:40]}_tmp_{os.getpid()}" if temporary else slot
        self.temporary = temporary
        log.info("snapshot step 1: creating %s replication slot %s with an exported snapshot",
                 "temporary" if temporary else "the job's", self.slot)
        self._conn = ReplicationConnection(params, where)
        try:
            kind = " TEMPORARY" if temporary else ""
            ((_, point, name, _),) = self._conn.command(
                f"CREATE_REPLICATION_SLOT \"{self.slot}\"{kind} LOGICAL pgoutput (SNAPSHOT 'export')")
        except BaseException:
            self._conn.close()
            raise
        assert point is not None and name is not None
        self.snapshot_name: str = name
        self.lsn = parse_lsn(point)
        self.position = snapshot_position(self.lsn)
        log.info("snapshot step 1: slot %s is consistent at %s (snapshot %s)", self.slot, point, name)

    def run(self, copy: Callable[[str], int]) -> SnapshotResult:
        """Step 2: ``copy(snapshot_name)`` reads and writes the tables; the result carries where streaming
        starts. An error is raised after the connection is closed (nothing of a failed table is committed)."""
        log.info("snapshot step 2: reading the tables as of %s", format_lsn(self.lsn))
        try:
            rows = copy(self.snapshot_name)
        finally:
            self.close()
        return SnapshotResult(status="completed", position=self.position, rows=rows)

    def close(self) -> None:
        """Step 3."""
        self._conn.close()

    def __enter__(self) -> ExportedSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
