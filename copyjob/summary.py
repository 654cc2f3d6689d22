"""What a person reads after a command: the run summary, status and history, as tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from copyjob.core.contracts import RunRecord, StateStore, TableRunRecord, TableState
from copyjob.core.scope import split_scope
from copyjob.core.values import display_value, encode_value
from copyjob.jobfile import Job, ResolvedTable
from copyjob.offsets.ledger import DEFINITION_KEY, Definition, definition_change, moved_target


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 and rows else "-"


def source_names(tables: Iterable[ResolvedTable]) -> dict[str, str]:
    """Target name → source name of a job's tables: what :func:`table_label` needs."""
    return {t.spec.target_name: t.spec.name for t in tables}


def stored_source_names(states: Mapping[str, TableState]) -> dict[str, str]:
    """Target name → source name as the state store remembers them (the definition of the last commit): for
    status and history read from the state alone."""
    names = {}
    for label, state in states.items():
        definition = state.extra.get(DEFINITION_KEY)
        if isinstance(definition, Mapping) and isinstance(definition.get("source"), str):
            names[label] = definition["source"]
    return names


def table_label(target: str, sources: Mapping[str, str] | None) -> str:
    """How every summary names a table: ``source → target`` when they differ, else the one name."""
    source = (sources or {}).get(target)
    return f"{source} → {target}" if source and source != target else target


def print_run(console: Console, run: RunRecord, sources: Mapping[str, str] | None = None) -> None:
    job, destination = split_scope(run.job)
    into = f" into {destination}" if destination else ""
    table = Table(title=f"copyjob run {job}{into} ({run.run_id})", title_justify="left")
    for col, justify in (("table", "left"), ("mode", "left"), ("rows read", "right"),
                         ("rows written", "right"), ("duration", "right"), ("rows/s", "right"),
                         ("watermark", "left"), ("status", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for t in run.tables:
        status = {"ok": "[green]ok[/]", "skipped": "[yellow]skipped[/]"}.get(t.status, f"[red]{t.status}[/]")
        watermark = f"{display_value(t.watermark_before)} → {display_value(t.watermark_after)}"
        table.add_row(table_label(t.table, sources), t.mode, f"{t.rows_read:,}", f"{t.rows_written:,}",
                      f"{t.duration_s:.2f}s", _rate(t.rows_written, t.duration_s), watermark, status)
    console.print(table)
    for t in run.tables:
        name = table_label(t.table, sources)
        if t.note:
            console.print(f"[yellow]note[/]: {name}: started over ({t.note})", soft_wrap=True,
                          highlight=False)
        if t.changes:
            console.print(f"changes: {name}: {changes_text(t.changes)}", highlight=False)
        if t.reread_rows:
            console.print(f"note: {name}: {t.reread_rows:,} of the {t.rows_read:,} rows read are at the last "
                          f"watermark ({display_value(t.watermark_before)}): read again, as rows may join it "
                          "after a run, and merged by key", highlight=False)
        if t.dead_letters:
            events = f"{t.dead_letters:,} event{'' if t.dead_letters == 1 else 's'}"
            console.print(f"[red]dead letters[/]: {name}: {events} went to the dead-letter topic", highlight=False)
        if t.null_watermark_rows:
            console.print(f"[yellow]note[/]: {name}: {t.null_watermark_rows:,} rows have a NULL incremental "
                          "column and were not copied by this incremental run (a full copy or a reset "
                          "takes them)")
        if t.error:
            word = "[yellow]skipped[/]" if t.status == "skipped" else "[red]failed[/]"
            console.print(f"{word}: {name}: {t.error}", soft_wrap=True)
    failed = sum(1 for t in run.tables if t.status != "ok")
    total = sum(t.rows_written for t in run.tables)
    verdict = "[green]succeeded[/]" if not failed else f"[red]{failed} of {len(run.tables)} tables failed[/]"
    if run.status == "skipped":
        verdict = "[yellow]skipped[/] (another run of this job was in progress)"
    console.print(f"{len(run.tables)} tables, {total:,} rows written: {verdict}")


def changes_text(changes: Mapping[str, int]) -> str:
    """``30 inserts, 5 updates, 2 deletes`` (a CDC table's changes applied in a run)."""
    return ", ".join(f"{changes.get(kind, 0):,} {kind}" for kind in ("inserts", "updates", "deletes"))


def _json_value(value: Any) -> Any:
    return encode_value(value)[0]


def table_run_json(t: TableRunRecord) -> dict[str, Any]:
    return {"table": t.table, "mode": t.mode, "status": t.status, "rows_read": t.rows_read,
            "rows_written": t.rows_written, "duration_s": round(t.duration_s, 3),
            "watermark_before": _json_value(t.watermark_before),
            "watermark_after": _json_value(t.watermark_after),
            "null_watermark_rows": t.null_watermark_rows, "error": t.error, "note": t.note,
            "changes": t.changes, "reread_rows": t.reread_rows, "dead_letters": t.dead_letters}


def run_json(run: RunRecord) -> dict[str, Any]:
    job, destination = split_scope(run.job)
    return {"run_id": run.run_id, "job": job, "destination": destination, "status": run.status,
            "trigger": run.trigger,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "tables": [table_run_json(t) for t in run.tables]}


def status_rows(states: list[tuple[str, str, TableState]],
                reasons: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """(label, mode, state) → rows for status output. ``reasons``: why an edit of the job file makes a table
    start over (:func:`edit_resets`), by label: said in ``next_run`` and ``reset_reason``."""
    rows = []
    for label, mode, s in states:
        next_run = "full" if mode == "full" or s.needs_full or not s.extra.get("committed_run_id") \
            else "incremental"
        if mode == "cdc":  # a snapshot first, then the change stream
            next_run = "snapshot" if s.needs_full or not s.extra.get("cdc_position") else "stream"
        reason = (reasons or {}).get(label)
        if reason is not None:
            next_run = f"{'snapshot' if mode == 'cdc' else 'full'} ({reason})"
        rows.append({"table": label, "mode": mode, "last_run": s.last_run_at.isoformat() if s.last_run_at
                     else None, "last_outcome": s.last_status, "watermark": _json_value(s.watermark),
                     "next_run": next_run, "last_error": s.last_error, "reset_reason": reason})
    return rows


def edit_resets(states: Mapping[str, TableState], definitions: Mapping[str, Definition]) -> dict[str, str]:
    """Why the next run starts tables over because the job file changed since their last commit, by label
    (``definitions``: the job file's now; compared with the copies the state store keeps in ``states``, all of
    the job's scope; at run time the destination's marker decides)."""
    reasons = {}
    for label, definition in definitions.items():
        state = states.get(label)
        if state is not None and state.extra.get("committed_run_id"):
            reason = definition_change(state.extra.get(DEFINITION_KEY), definition)
        else:
            reason = moved_target(states, definition, definitions.keys())
        if reason is not None:
            reasons[label] = reason
    return reasons


def schedule_rows(store: StateStore, job: Job, scope: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per schedule: its expression, time zone and next run, in that zone. ``missed``: a fire time passed
    while serve was not running; serve runs it once when it starts."""
    from copyjob.schedule import ScheduleRule, load_last_fire

    now = now or datetime.now(UTC)
    rows = []
    for spec in job.schedules:
        rule = ScheduleRule.of(spec)
        last = load_last_fire(store, scope, rule)
        due = rule.next_after(last) if last is not None else rule.next_after(now)
        kind = {"cron": spec.cron} if spec.cron is not None else {"every": spec.every}
        rows.append({**kind, "timezone": rule.zone_name,
                     "next_run": due.astimezone(rule.zone).isoformat() if due is not None else "never",
                     "missed": due is not None and due <= now,
                     "last_fire": last.astimezone(rule.zone).isoformat() if last is not None else None})
    return rows


def trigger_rows(job: Job) -> list[dict[str, Any]]:
    return [{"file_arrival": t.file_arrival.model_dump()} for t in job.triggers]


def print_status(console: Console, job: str, rows: list[dict[str, Any]],
                 schedules: Sequence[dict[str, Any]] = (), triggers: Sequence[dict[str, Any]] = (),
                 sources: Mapping[str, str] | None = None, destination: str | None = None) -> None:
    into = f" into {destination}" if destination else ""
    table = Table(title=f"copyjob status {job}{into}", title_justify="left")
    for col in ("table", "mode", "last run", "last outcome", "watermark", "next run"):
        table.add_column(col)
    for r in rows:
        outcome = r["last_outcome"] or "never run"
        if outcome == "failed":
            outcome = "[red]failed[/]"
        table.add_row(table_label(r["table"], sources), r["mode"], r["last_run"] or "-", outcome,
                      str(r["watermark"] or "-"), r["next_run"])
    console.print(table)
    for r in rows:
        if r["last_outcome"] == "failed" and r["last_error"]:
            console.print(f"[red]last error[/]: {table_label(r['table'], sources)}: {r['last_error']}",
                          soft_wrap=True)
    for sc in schedules:
        what = f"cron {sc['cron']}" if "cron" in sc else f"every {sc['every']}"
        when = (f"[yellow]missed[/] {sc['next_run']} (runs once when serve starts)" if sc["missed"]
                else sc["next_run"])
        console.print(f"schedule: {what} ({sc['timezone']}): next run {when}", highlight=False, soft_wrap=True)
    for tr in triggers:
        fa = tr["file_arrival"]
        console.print(f"trigger: file_arrival {fa['path']} {fa['pattern']} (debounce {fa['debounce']}"
                      f"{', recursive' if fa['recursive'] else ''})", highlight=False, soft_wrap=True)


def print_history(console: Console, runs: list[RunRecord], sources: Mapping[str, str] | None = None,
                  title: str = "copyjob history") -> None:
    """One row per table of each run: rows, duration, rows/s and the watermark it moved (before → after); then
    a line per table with more figures (a CDC table's changes by kind, rows re-read, dead letters)."""
    table = Table(title=title, title_justify="left")
    for col, justify in (("run", "left"), ("started", "left"), ("trigger", "left"), ("status", "left"),
                         ("table", "left"), ("mode", "left"), ("rows read", "right"), ("rows written", "right"),
                         ("duration", "right"), ("rows/s", "right"), ("watermark", "left"), ("error", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for run in runs:
        first = True
        for t in run.tables or [TableRunRecord(table="-", mode="-", status=run.status)]:
            watermark = "-" if t.watermark_before is None and t.watermark_after is None else \
                f"{display_value(t.watermark_before)} → {display_value(t.watermark_after)}"
            table.add_row(run.run_id if first else "", run.started_at.isoformat(timespec="seconds")
                          if first else "", run.trigger if first else "", run.status if first else "",
                          table_label(t.table, sources), t.mode, f"{t.rows_read:,}", f"{t.rows_written:,}",
                          f"{t.duration_s:.2f}s", _rate(t.rows_written, t.duration_s), watermark, t.error or "")
            first = False
    console.print(table)
    for run in runs:
        for t in run.tables:
            figures = table_figures(t)
            if figures:
                console.print(f"{run.run_id} {table_label(t.table, sources)}: {figures}", highlight=False,
                              soft_wrap=True)


def table_figures(t: TableRunRecord) -> str:
    """``30 inserts, 5 updates, 2 deletes; 12 rows re-read; 1 dead letter`` (what a table counted beyond rows
    read and written; empty when nothing)."""
    parts = [changes_text(t.changes)] if t.changes is not None else []
    if t.reread_rows:
        parts.append(f"{t.reread_rows:,} rows re-read at the watermark")
    if t.dead_letters:
        parts.append(f"{t.dead_letters:,} dead letter{'' if t.dead_letters == 1 else 's'}")
    return "; ".join(parts)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
