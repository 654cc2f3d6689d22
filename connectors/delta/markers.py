"""State markers inside Delta commits.

A load's commit carries its marker twice: the commit info's custom metadata ``copyjob.marker`` (the marker as
JSON, with the transaction version it sets) and an application transaction ``copyjob:<job>:<marker name>``
whose version counts the marker's commits. The transaction lives in the table's snapshot (checkpoints keep it),
so it says which commit holds the current marker even when later commits (compaction, other writers) came in
between. A marker's name is usually the table's; the Kafka apply side keeps one per partition
(``<table>#<partition>``), in the same table.
"""

from __future__ import annotations

import json
import re
from typing import Any

from copyjob.connectors.delta.errors import deltalake, translated

from copyjob.core.contracts import StateMarker

MARKER_KEY = "copyjob.marker"
"""The commit info's custom metadata holding the marker (JSON; a list of markers when a compaction carries
several forward)."""
HISTORY_PAGE = 50
"""Commits read at a time while looking for the one that set a marker (usually among the latest)."""
_PARTITION = re.compile(r"^(.*)#\d+$")


def app_id(job: str, name: str) -> str:
    return f"copyjob:{job}:{name}"


def table_names(name: str) -> list[str]:
    """The tables a marker of this name may live in: its own name, then (``<table>#<partition>``) the table."""
    found = _PARTITION.match(name)
    return [name, found.group(1)] if found else [name]


def commit_properties(dt: Any, marker: StateMarker | None) -> Any:
    """The properties of a load's commit into ``dt``: the marker and the next version of its transaction."""
    if marker is None:
        return None
    lake = deltalake()
    app = app_id(marker.job, marker.table)
    version = (translated(lambda: dt.transaction_version(app), marker.table) or 0) + 1
    doc = {"job": marker.job, "table": marker.table, "run_id": marker.run_id, "state": marker.state,
           "txn": version}
    return lake.CommitProperties(custom_metadata={MARKER_KEY: json.dumps(doc)},
                                 app_transactions=[lake.Transaction(app, version)])


def docs_of(commit: dict[str, Any]) -> list[dict[str, Any]]:
    found = json.loads(commit.get(MARKER_KEY) or "null")
    return found if isinstance(found, list) else [found] if isinstance(found, dict) else []


def find(dt: Any, job: str, name: str) -> StateMarker | None:
    """The marker ``name`` of ``job`` in ``dt``: the one carrying the version its transaction holds."""
    version = translated(lambda: dt.transaction_version(app_id(job, name)), name)
    if version is None:
        return None
    seen = 0
    while True:
        commits = translated(lambda n=seen + HISTORY_PAGE: dt.history(n), name)
        for commit in commits[seen:]:
            for doc in docs_of(commit):
                if doc.get("job") == job and doc.get("table") == name and doc.get("txn") == version:
                    return StateMarker(job=job, table=name, run_id=doc["run_id"], state=doc["state"])
        if len(commits) < seen + HISTORY_PAGE:
            # that commit's log entry was cleaned up (log retention) with no later copy: the load is there but
            # not its state; the table starts over
            return None
        seen += HISTORY_PAGE


def carried_forward(dt: Any, table: object) -> Any:
    """Commit properties repeating the newest marker of each (job, name) among the table's recent commits, for a
    maintenance commit (None: none)."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for commit in translated(lambda: dt.history(200), table):
        for doc in docs_of(commit):
            newest.setdefault((doc.get("job", ""), doc.get("table", "")), doc)
    if not newest:
        return None
    return deltalake().CommitProperties(custom_metadata={MARKER_KEY: json.dumps(list(newest.values()))})
