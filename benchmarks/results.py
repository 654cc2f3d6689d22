"""One line of the benchmark report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Result:
    """A measured run: ``key`` is stable (used for ratios and targets), ``label`` is what the table shows.

    ``ok`` is False when the run failed or its output did not check out; ``error`` then says why. A run
    whose time means nothing per row (the no-op incremental run) has ``per_row`` False; one that is not a
    copy of the orders table (the incremental runs) has ``vs_raw`` False: no ratio to the raw pipe.
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
