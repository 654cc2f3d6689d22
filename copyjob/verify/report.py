"""What ``copyjob verify`` found for one table (:class:`TableReport`), as text and as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Difference:
    """A key whose values differ, and the differing columns (destination names)."""

    key: dict[str, Any]
    columns: list[str]


@dataclass
class TableReport:
    table: str
    """The destination table (the job's target)."""
    source: str
    mode: str
    rows_source: int = 0
    rows_destination: int = 0
    ranges: int = 0
    """Key ranges whose count and hash were compared (bisection included)."""
    missing: list[dict[str, Any]] = field(default_factory=list)
    """Keys in the source that the destination lacks."""
    extra: list[dict[str, Any]] = field(default_factory=list)
    """Keys in the destination that the source lacks."""
    different: list[Difference] = field(default_factory=list)
    rechecked: int = 0
    """Keys found differing that were compared again once the change stream had caught up (cdc)."""
    notes: list[str] = field(default_factory=list)
    repaired: int | None = None
    """Keys re-copied or deleted by ``--repair`` (None: no repair asked or possible)."""
    repair_verified: bool = False
    """Every repaired key compared equal afterwards."""
    error: str | None = None
    duration_s: float = 0.0
    unkeyed_difference: bool = False
    """A table without a key whose whole-table hash differs (no keys to name)."""

    @property
    def equal(self) -> bool:
        return self.error is None and not (self.missing or self.extra or self.different) \
            and self.rows_source == self.rows_destination and not self.unkeyed_difference

    @property
    def ok(self) -> bool:
        """Equal, or made equal by the repair."""
        return self.equal or self.repair_verified

    @property
    def result(self) -> str:
        if self.error is not None:
            return "error"
        if self.equal:
            return "equal"
        return "repaired" if self.repair_verified else "different"

    def summary(self) -> str:
        if self.error is not None:
            return f"error: {self.error}"
        if self.equal:
            return f"equal ({self.rows_source} rows, {self.ranges} ranges)"
        parts = [f"{len(self.missing)} missing", f"{len(self.extra)} extra", f"{len(self.different)} different"]
        if self.unkeyed_difference:
            parts = [f"{self.rows_source} rows in the source, {self.rows_destination} in the destination, "
                     "whole-table hash differs"]
        return "different: " + ", ".join(parts)

    def to_json(self, limit: int) -> dict[str, Any]:
        return {
            "table": self.table, "source": self.source, "mode": self.mode, "result": self.result,
            "rows_source": self.rows_source, "rows_destination": self.rows_destination, "ranges": self.ranges,
            "missing_count": len(self.missing), "extra_count": len(self.extra),
            "different_count": len(self.different),
            "missing": self.missing[:limit], "extra": self.extra[:limit],
            "different": [{"key": d.key, "columns": d.columns} for d in self.different[:limit]],
            "rechecked": self.rechecked, "repaired": self.repaired, "notes": self.notes, "error": self.error,
            "duration_s": round(self.duration_s, 3),
        }

    def lines(self, limit: int) -> list[str]:
        """The report as text: one summary line, then the first ``limit`` keys of each kind."""
        label = self.table if self.source == self.table else f"{self.source} → {self.table}"
        out = [f"{label}: {self.summary()}"]
        if self.rechecked:
            out.append(f"  re-checked {self.rechecked} keys after the change stream caught up")
        for name, keys in (("missing", self.missing), ("extra", self.extra)):
            for key in keys[:limit]:
                out.append(f"  {name}: {_key_text(key)}")
            if len(keys) > limit:
                out.append(f"  … {len(keys) - limit} more {name}")
        for d in self.different[:limit]:
            out.append(f"  different: {_key_text(d.key)} ({', '.join(d.columns)})")
        if len(self.different) > limit:
            out.append(f"  … {len(self.different) - limit} more different")
        if self.repaired is not None:
            out.append(f"  repaired {self.repaired} keys" + (" (verified equal)" if self.repair_verified else ""))
        out.extend(f"  note: {n}" for n in self.notes)
        return out


def _key_text(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())
