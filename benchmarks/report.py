"""The report: ratios to the raw pipe, copyjob against dlt and sling, the targets, as markdown and JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.results import Result

RAW, RAW_PK = "raw_pipe", "raw_pipe_pk"
COPYJOB, BIG = "copyjob_full", "copyjob_big"

TARGET_RAW_RATIO = 0.6
TARGET_BIG_RSS_MB = 300.0
TARGET_NOOP_S = 3.0


@dataclass(frozen=True)
class Target:
    name: str
    wanted: str
    value: str
    met: bool | None  # None: could not be measured

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "wanted": self.wanted, "value": self.value, "met": self.met}


def _by_key(results: list[Result]) -> dict[str, Result]:
    return {r.key: r for r in results}


def ratio(results: list[Result], key: str, reference: str) -> float | None:
    """rows/s of ``key`` ÷ rows/s of ``reference`` (None when either is missing or failed). For the raw pipe
    references, the raw pipe lines of the same table size (``baseline``) are used."""
    found = _by_key(results)
    a = found.get(key)
    if a is not None and reference in (RAW, RAW_PK):
        reference += a.baseline
    b = found.get(reference)
    if a is None or b is None or not a.vs_raw or a.rows_per_s is None or b.rows_per_s is None:
        return None
    return a.rows_per_s / b.rows_per_s


def comparisons(results: list[Result]) -> dict[str, Any]:
    """copyjob's full copy against dlt and sling: speed (× faster) and memory (× less)."""
    found = _by_key(results)
    out: dict[str, Any] = {}
    ours = found.get(COPYJOB)
    for other in ("dlt", "sling"):
        theirs = found.get(other)
        speed = ratio(results, COPYJOB, other)
        memory = (theirs.peak_rss_mb / ours.peak_rss_mb if ours and theirs and ours.peak_rss_mb
                  and theirs.peak_rss_mb and theirs.error is None and ours.error is None else None)
        out[other] = {"speed_ratio": speed, "memory_ratio": memory,
                      "error": theirs.error if theirs is not None else "not run"}
    return out


def targets(results: list[Result]) -> list[Target]:
    found = _by_key(results)
    out: list[Target] = []

    for key in (COPYJOB, BIG):
        if key not in found:
            continue
        raw_pk = ratio(results, key, RAW_PK)
        raw = ratio(results, key, RAW)
        out.append(Target(f"copyjob full copy, {found[key].rows:,} rows, vs raw pipe + PK (both build the key); "
                          f"vs COPY alone: {_x(raw)}", f"≥ {TARGET_RAW_RATIO}×", _x(raw_pk),
                          None if raw_pk is None else raw_pk >= TARGET_RAW_RATIO))
    for other in ("dlt", "sling"):
        speed = ratio(results, COPYJOB, other)
        out.append(Target(f"copyjob full copy faster than {other}", "> 1×", _x(speed),
                          None if speed is None else speed > 1.0))
    big = found.get(BIG)
    big_ok = big is not None and big.error is None and big.peak_rss_mb is not None
    out.append(Target(f"copyjob peak RSS, {big.rows:,} rows" if big else "copyjob peak RSS, big table (skipped)",
                      f"< {TARGET_BIG_RSS_MB:.0f} MB", f"{big.peak_rss_mb:.0f} MB" if big_ok and big else "-",
                      (big.peak_rss_mb < TARGET_BIG_RSS_MB) if big_ok and big and big.peak_rss_mb else None))
    noop = found.get("incremental_noop")
    noop_ok = noop is not None and noop.error is None and noop.seconds is not None
    tables = noop.details.get("tables", "?") if noop else "?"
    out.append(Target(f"no-op incremental run, {tables} tables", f"< {TARGET_NOOP_S:.0f} s",
                      f"{noop.seconds:.2f} s" if noop_ok and noop and noop.seconds else "-",
                      (noop.seconds < TARGET_NOOP_S) if noop_ok and noop and noop.seconds else None))
    return out


# ---------------------------------------------------------------- rendering


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _x(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None else "-"


def _num(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    load = meta.get("load_average_at_start", ["?"])[0]
    lines = [f"## copyjob benchmark ({meta['started_at']}, {meta['machine']['cpus']} CPUs, "
             f"PostgreSQL {meta.get('postgres_version', '?')})", "",
             f"Each copy ran {meta['params']['repeat']}× (median shown); load average at start {load}.", ""]
    lines.append("| run | rows | seconds | rows/s | peak RSS MB | CPU s | ÷ raw pipe | ÷ raw pipe + PK | check |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        seconds = "error" if r.seconds is None else f"{r.seconds:.2f}"
        lines.append(" | ".join([
            f"| {_cell(r.label)}", f"{r.rows:,}", seconds, _num(r.rows_per_s, ",.0f"), _num(r.peak_rss_mb, ".0f"),
            _num(r.cpu_seconds, ".1f"), _x(ratio(results, r.key, RAW)), _x(ratio(results, r.key, RAW_PK)),
            _cell(r.check or "-") + " |"]))
    lines += ["", "**copyjob full copy vs the others** (above 1× copyjob is better)", "",
              "| vs | speed: copyjob rows/s ÷ theirs | memory: their peak RSS ÷ copyjob's |", "| --- | ---: | ---: |"]
    for other, c in comparisons(results).items():
        lines.append(f"| {other} | {_x(c['speed_ratio'])} | {_x(c['memory_ratio'])} |")
    lines += ["", "**Targets**", "", "| target | wanted | got | met |", "| --- | --- | --- | --- |"]
    for t in targets(results):
        met = "n/a" if t.met is None else "yes" if t.met else "**NO**"
        lines.append(f"| {t.name} | {t.wanted} | {t.value} | {met} |")
    notes = [(r.label, n) for r in results for n in r.notes]
    errors = [(r.label, r.error) for r in results if r.error]
    if errors:
        lines += ["", "**Errors**", ""] + [f"- {label}: {error}" for label, error in errors]
    if notes:
        lines += ["", "**Notes**", ""] + [f"- {label}: {note}" for label, note in notes]
    return "\n".join(lines) + "\n"


def write_json(path: Path, results: list[Result], meta: dict[str, Any]) -> None:
    data = {
        **meta,
        "results": [r.to_json() for r in results],
        "ratios_to_raw_pipe": {r.key: {"raw_pipe": ratio(results, r.key, RAW),
                                       "raw_pipe_pk": ratio(results, r.key, RAW_PK)} for r in results},
        "copyjob_vs": comparisons(results),
        "targets": [t.to_json() for t in targets(results)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
