"""Binlog positions: JSON-safe mappings that order every change and say where a stream resumes.

Two shapes, both plain dicts (they travel in change events, state markers and the state store):

- **a change** (a row, or a truncate) inside transaction *T*::

      {"file": "binlog.000003", "pos": 4567, "row": 2, "gtid": "0-1-17", "gtid_pos": "0-1-16"}

  ``pos`` is where *T* starts in ``file`` (its GTID event, or its ``BEGIN`` without GTIDs), ``row`` counts the
  changes of *T* from 1, ``gtid`` is *T*'s GTID and ``gtid_pos`` the GTID position executed before *T*
  (MariaDB: ``domain-server-seq`` per domain; MySQL: a GTID set);
- **a point between transactions** (a snapshot, or where a stream stands)::

      {"file": "binlog.000003", "pos": 5120, "row": 0, "gtid_pos": "0-1-17"}

  ``pos`` is where the next transaction will start; ``gtid_pos`` what was executed up to there.

Positions compare by ``(file number, pos, row)``, which is the order of the binlog of one server. A stream
resumes *at* a position: from its ``gtid_pos`` when the server uses GTIDs (the server then sends the
transaction that holds the change again), else from ``file``/``pos``; changes at or before the position are
then skipped, so a resume inside a multi-row transaction skips exactly the rows already applied.
``gtid`` and ``gtid_pos`` are absent when the server has no GTIDs (MySQL with ``gtid_mode=OFF``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

Position = dict[str, Any]
OrderKey = tuple[int, int, int]

_FILE_NUMBER = re.compile(r"\.(\d+)$")


def file_number(name: str) -> int:
    """``binlog.000012`` → 12 (binlog files are numbered in order; the number may outgrow its padding)."""
    m = _FILE_NUMBER.search(name)
    if not m:
        raise ValueError(f"not a binlog file name: {name!r}")
    return int(m.group(1))


def order_key(position: Mapping[str, Any]) -> OrderKey:
    """Where a position sits in the binlog: ``(file number, pos, row)``."""
    try:
        return file_number(str(position["file"])), int(position["pos"]), int(position.get("row") or 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a MySQL binlog position: {dict(position)!r}") from exc


def is_binlog_position(position: Mapping[str, Any] | None) -> bool:
    if not position:
        return False
    try:
        order_key(position)
    except ValueError:
        return False
    return True


def between(file: str, pos: int, gtid_pos: str | None) -> Position:
    """A point between transactions (snapshot, stream position)."""
    out: Position = {"file": file, "pos": int(pos), "row": 0}
    if gtid_pos is not None:
        out["gtid_pos"] = gtid_pos
    return out


def earliest(positions: Iterable[Mapping[str, Any]]) -> Position:
    """The position to start a stream from so that every table gets what it still lacks."""
    chosen = min(positions, key=order_key)
    return dict(chosen)


def at_or_before(position: Mapping[str, Any], bound: Mapping[str, Any]) -> bool:
    return order_key(position) <= order_key(bound)


# ---------------------------------------------------------------- GTID positions

def mariadb_domains(gtid_pos: str) -> dict[int, str]:
    """``"0-1-17,1-2-5"`` → ``{0: "0-1-17", 1: "1-2-5"}`` (one last GTID per replication domain)."""
    out: dict[int, str] = {}
    for part in gtid_pos.replace("\n", "").split(","):
        part = part.strip()
        if part:
            out[int(part.split("-", 1)[0])] = part
    return out


def mariadb_after(gtid_pos: str, gtid: str) -> str:
    """The MariaDB GTID position once ``gtid`` committed: its domain's entry replaced."""
    domains = mariadb_domains(gtid_pos)
    domains[int(gtid.split("-", 1)[0])] = gtid
    return ",".join(domains[d] for d in sorted(domains))


def mysql_after(gtid_set: str, gtid: str) -> str:
    """The MySQL executed GTID set once ``gtid`` (``uuid:n``) committed."""
    from pymysqlreplication.gtid import Gtid, GtidSet

    merged = GtidSet(gtid_set.replace("\n", "")) + Gtid(gtid)
    return str(merged)
