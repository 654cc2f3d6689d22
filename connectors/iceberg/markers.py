"""State markers in snapshot summaries: each copyjob commit's snapshots carry every marker the table holds (one
summary property per job and marker name, ``copyjob.marker:["job","name"]`` → ``{"run_id", "state"}``), the
one it commits updated. So the newest snapshot that carries any marker carries them all: ``read_marker`` walks
back from the current snapshot past commits of other tools (and maintenance's, which carry them too) to it, and
expiring snapshots older than it loses none.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from copyjob.core.contracts import StateMarker

if TYPE_CHECKING:
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

MARKER_PREFIX = "copyjob.marker:"


def marker_key(job: str, name: str) -> str:
    return MARKER_PREFIX + json.dumps([job, name])


def chain(table: Table) -> list[Snapshot]:
    """The current snapshot and its ancestors, newest first."""
    found = []
    snapshot = table.current_snapshot()
    while snapshot is not None:
        found.append(snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return found


def _markers_of(snapshot: Snapshot) -> dict[str, str]:
    props = snapshot.summary.additional_properties if snapshot.summary else {}
    return {k: v for k, v in props.items() if k.startswith(MARKER_PREFIX)}


def newest_markers(table: Table) -> tuple[dict[str, str], list[Snapshot]]:
    """The markers of the newest snapshot that carries any, and the snapshots from the current one back to it
    (all of them when none carries a marker)."""
    walked: list[Snapshot] = []
    for snapshot in chain(table):
        walked.append(snapshot)
        found = _markers_of(snapshot)
        if found:
            return found, walked
    return {}, walked


def with_marker(table: Table, marker: StateMarker | None) -> dict[str, str]:
    """The summary properties of a commit: the markers the table carries, ``marker`` added or replaced."""
    carried, _ = newest_markers(table)
    if marker is None:
        return carried
    return {**carried, marker_key(marker.job, marker.table): value(marker)}


def value(marker: StateMarker) -> str:
    return json.dumps({"run_id": marker.run_id, "state": marker.state}, default=str)


def parse(job: str, name: str, text: str) -> StateMarker:
    doc = json.loads(text)
    return StateMarker(job=job, table=name, run_id=doc["run_id"], state=doc["state"])


def find(table: Table, job: str, name: str) -> StateMarker | None:
    carried, _ = newest_markers(table)
    text = carried.get(marker_key(job, name))
    return parse(job, name, text) if text is not None else None
