"""The file-set planner: which files a run copies, and the mark it leaves after each one.

Files are copied in (modification time, path) order. The *mark* is the newest modification time copied so
far (nanoseconds) and the names copied at exactly that time. A later run copies the files that are newer than
the mark, and the files at the mark's time whose names it does not hold: a file that lands with the same
timestamp as the last one copied (coarse clocks, S3's whole seconds) is neither lost nor copied twice. A file
rewritten in place gets a newer time, so it is copied again.

A file that cannot be read is *quarantined*: the mark moves past it as past any other file (so later files
still advance), and it is remembered with its time and size. It is tried again once either changes (it was
fixed), whatever its time; unchanged, it is left alone. A quarantined file that disappears is forgotten.

``complete`` is False while a pass is under way: a pass that a crash or an error interrupted is resumed from
its mark by the next run instead of starting over (no file of it is copied twice, even under append).

Pure logic: no I/O. The state is JSON inside the table's state (the marker and the state store).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from copyjob.core.contracts import FileInfo

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Quarantined:
    mtime_ns: int
    size: int
    error: str


@dataclass(frozen=True)
class FileMark:
    """Where a file set's copy stands."""

    mtime_ns: int | None = None
    names: frozenset[str] = frozenset()
    quarantined: Mapping[str, Quarantined] = field(default_factory=dict)
    complete: bool = True

    @property
    def watermark(self) -> dt.datetime | None:
        """The mark as a time, for people (status, summaries); microseconds, UTC."""
        if self.mtime_ns is None:
            return None
        return _EPOCH + dt.timedelta(microseconds=self.mtime_ns // 1000)

    def to_json(self) -> dict[str, Any]:
        return {
            "mtime_ns": self.mtime_ns, "names": sorted(self.names), "complete": self.complete,
            "quarantined": {p: {"mtime_ns": q.mtime_ns, "size": q.size, "error": q.error}
                            for p, q in sorted(self.quarantined.items())},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> FileMark:
        if not doc:
            return cls()
        quarantined = {p: Quarantined(int(q["mtime_ns"]), int(q["size"]), str(q.get("error", "")))
                       for p, q in (doc.get("quarantined") or {}).items()}
        mtime = doc.get("mtime_ns")
        return cls(mtime_ns=None if mtime is None else int(mtime), names=frozenset(doc.get("names") or ()),
                   quarantined=quarantined, complete=bool(doc.get("complete", True)))


def start_pass(previous: FileMark, *, fresh: bool) -> FileMark:
    """The mark a run starts from: empty for a fresh (full) pass, else the previous one; in progress."""
    return replace(FileMark() if fresh else previous, complete=False)


def files_to_copy(listed: Iterable[FileInfo], mark: FileMark) -> list[FileInfo]:
    """The listed files past the mark, plus quarantined files that changed, in copy order."""
    chosen = []
    for f in listed:
        q = mark.quarantined.get(f.path)
        if q is not None:
            if (q.mtime_ns, q.size) != (f.mtime_ns, f.size):
                chosen.append(f)
        elif _past(f, mark):
            chosen.append(f)
    return sorted(chosen, key=lambda f: (f.mtime_ns, f.path))


def forget_vanished(mark: FileMark, listed: Sequence[FileInfo]) -> FileMark:
    """Drop quarantined files that are no longer there: nothing is left to retry."""
    present = {f.path for f in listed}
    kept = {p: q for p, q in mark.quarantined.items() if p in present}
    return mark if len(kept) == len(mark.quarantined) else replace(mark, quarantined=kept)


def after_copy(mark: FileMark, f: FileInfo) -> FileMark:
    """The mark once ``f`` is copied."""
    quarantined = {p: q for p, q in mark.quarantined.items() if p != f.path}
    return replace(_advanced(mark, f), quarantined=quarantined)


def after_failure(mark: FileMark, f: FileInfo, error: str) -> FileMark:
    """The mark once ``f`` is found bad: past it, and it quarantined with its time and size."""
    quarantined = {**mark.quarantined, f.path: Quarantined(f.mtime_ns, f.size, error)}
    return replace(_advanced(mark, f), quarantined=quarantined)


def finish_pass(mark: FileMark) -> FileMark:
    return replace(mark, complete=True)


def _past(f: FileInfo, mark: FileMark) -> bool:
    if mark.mtime_ns is None or f.mtime_ns > mark.mtime_ns:
        return True
    return f.mtime_ns == mark.mtime_ns and f.path not in mark.names


def _advanced(mark: FileMark, f: FileInfo) -> FileMark:
    if mark.mtime_ns is None or f.mtime_ns > mark.mtime_ns:
        return replace(mark, mtime_ns=f.mtime_ns, names=frozenset({f.path}))
    if f.mtime_ns == mark.mtime_ns:
        return replace(mark, names=mark.names | {f.path})
    return mark  # an older file (a fixed quarantined one): the mark stays
