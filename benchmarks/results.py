"""One line of the benchmark report."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Result:
    """A measured run: ``key`` is stable (used for ratios and targets), ``label`` is what the table shows.

    ``ok`` is False when the run failed or its output did not check out; ``error`` then says why. A run
    whose time means nothing per row (the no-op incremental run) has ``per_row`` False; one that is not a
    copy of the orders table (the incremental runs) has ``vs_raw`` False: no ratio to the raw pipe. Lines
    about another table size than the main one name their raw pipe lines by ``baseline``.
    """

    key: str
    label: str
    rows: int
    seconds: float | None = None
    peak_rss_mb: float | None = None
    cpu_seconds: float | None = None
    ok: bool = False
    error: str | None = None
    check: str = ""
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    per_row: bool = True
    vs_raw: bool = True
    baseline: str = ""  # compared with the raw pipe lines of the same size: keys "raw_pipe" + baseline

    @property
    def rows_per_s(self) -> float | None:
        if not self.per_row or not self.seconds or self.error is not None:
            return None
        return self.rows / self.seconds

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows_per_s"] = round(self.rows_per_s, 1) if self.rows_per_s is not None else None
        for name in ("seconds", "peak_rss_mb", "cpu_seconds"):
            if data[name] is not None:
                data[name] = round(data[name], 3)
        return data


def failed(key: str, label: str, rows: int, error: str) -> Result:
    return Result(key=key, label=label, rows=rows, ok=False, error=error, check="error")


def combine(runs: list[Result]) -> Result:
    """One line for repeated runs of the same thing: the median time (CPU time, numeric details too), the
    highest peak RSS, ok only if every run was, the notes of the first (or first failed) run; each run's
    seconds are kept in ``details["runs_seconds"]``."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    bad = next((r for r in runs if not r.ok), None)
    timed = [r for r in runs if r.seconds is not None and r.error is None]
    out = Result(key=first.key, label=first.label, rows=first.rows, per_row=first.per_row, vs_raw=first.vs_raw,
                 baseline=first.baseline, ok=bad is None, error=bad.error if bad else None, check=(bad or first).check,
                 details=dict(first.details))
    if timed:
        out.seconds = statistics.median(r.seconds for r in timed if r.seconds is not None)
        out.cpu_seconds = statistics.median(r.cpu_seconds for r in timed if r.cpu_seconds is not None)
    rss = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    out.peak_rss_mb = max(rss) if rss else None
    for name in first.details:  # numbers measured per run: their median too
        values = [r.details.get(name) for r in runs]
        numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) == len(values):
            out.details[name] = round(statistics.median(numbers), 3)
    out.details["runs_seconds"] = [round(r.seconds, 3) if r.seconds is not None else None for r in runs]
    out.notes = list((bad or first).notes)
    return out


def combine_by_key(runs: list[list[Result]]) -> list[Result]:
    """:func:`combine` for scenarios that give several lines per run (matched by key, first run's order)."""
    keys = [r.key for r in runs[0]]
    return [combine([r for lines in runs for r in lines if r.key == key]) for key in keys]
