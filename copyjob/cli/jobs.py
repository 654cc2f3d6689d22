"""The job commands: run, serve, validate, status, history, reset, demo.

Exit codes: 0 success; 1 a table failed (or a system could not be reached); 2 a bad job file, variables
file or command line; 3 skipped because another run of the job held the lock past --wait; 130 interrupted.
``serve`` exits 0 once stopped by SIGTERM/SIGINT and its running runs have ended (130 on a second signal).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from copyjob.cli.cdc import cdc_status, print_cdc_status
from copyjob.cli.common import (
    EnvOpt,
    JobArg,
    StateOpt,
    TablesOpt,
    VarsOpt,
    WaitOpt,
    existing_state_store,
    guard,
    load_job_file,
    out,
    state_store,
)
from copyjob.core.errors import EXIT_BAD_INPUT, EXIT_SKIPPED, EXIT_TABLE_FAILED

if TYPE_CHECKING:
    from copyjob.core.contracts import TableState
    from copyjob.loader import LoadedJob


def register(app: typer.Typer) -> None:
    for command in (run, serve, validate, status, history, reset, demo):
        app.command()(command)


def run(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
        state: StateOpt = None,
        progress: Annotated[bool, typer.Option(help="Show progress bars on a terminal.")] = True,
        wait: WaitOpt = 3600.0) -> None:
    """Run the job once and print a summary per table."""

    def body() -> int:
        from copyjob.progress import Progress
        from copyjob.runner import JobRun
        from copyjob.summary import print_run

        loaded = load_job_file(job_file, env, variables)
        job_run = JobRun(loaded, lambda: state_store(loaded, state), Progress(live=None if progress else False),
                         lock_wait_s=wait)
        try:
            record = job_run.run(table or None)
        finally:
            job_run.close()
        print_run(out, record)
        return {"ok": 0, "skipped": EXIT_SKIPPED}.get(record.status, EXIT_TABLE_FAILED)

    raise typer.Exit(guard(body))


def serve(paths: Annotated[list[Path], typer.Argument(help="Job files, or folders: every *.yaml/*.yml in it "
                                                      "with a job: key.", show_default=False)],
          env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
          poll: Annotated[bool, typer.Option("--poll", help="Poll trigger folders instead of waiting for file "
                                             "events (for filesystems that send none).")] = False,
          workers: Annotated[int | None, typer.Option("--workers", min=1, help="Jobs running at once "
                                                      "(default: one per job, at most 8).")] = None) -> None:
    """Run jobs on their schedules and file-arrival triggers until SIGTERM or Ctrl-C."""

    def body() -> int:
        from copyjob.serve import Server, find_job_files, served_job, tick_from_env

        _log_to_stderr("copyjob.serve")
        tick = tick_from_env()
        jobs = []
        for path in find_job_files(paths):
            loaded = load_job_file(path, env, variables)
            jobs.append(served_job(loaded, partial(state_store, loaded, state), poll=poll, poll_interval_s=tick))
        server = Server(jobs, tick_s=tick, workers=workers)
        server.install_signal_handlers()
        server.serve()
        return 0

    raise typer.Exit(guard(body))


def _log_to_stderr(name: str) -> None:
    """One plain line per event, with a timestamp: serve's log is read by people and by log collectors."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def validate(job_file: JobArg, env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
             connect: Annotated[bool, typer.Option("--connect", help="Also reach both ends and check every "
                                                   "table and column.")] = False) -> None:
    """Check the job file (and with --connect, the systems it names)."""

    def body() -> int:
        loaded = load_job_file(job_file, env, variables)
        if connect and _report_connect_problems(job_file, loaded):
            return EXIT_BAD_INPUT
        what = "reached both ends; every table and column checked" if connect else "job file is valid"
        out.print(f"[green]ok[/]: {job_file}: {what} ({len(loaded.tables)} tables)")
        for label, reason in _edit_resets(loaded, state):
            out.print(f"[yellow]note[/]: {label}: the next run starts it over ({reason})", soft_wrap=True,
                      highlight=False)
        return 0

    raise typer.Exit(guard(body))


def _report_connect_problems(job_file: Path, loaded: LoadedJob) -> bool:
    """``validate --connect``: reach both ends and run the checks ``run`` runs before it writes or creates
    anything (tables and columns, and for cdc tables the source's change capture needs); print every problem
    and return whether there was one."""
    from rich.markup import escape

    from copyjob.cli.common import err
    from copyjob.connectors import destination_capabilities, open_destination, open_source
    from copyjob.core.redaction import redact
    from copyjob.filesets import endpoint_url
    from copyjob.preflight import capture_problems, table_problems

    destination_url = endpoint_url(loaded.job.destination, loaded.base_dir)
    source = open_source(endpoint_url(loaded.job.source, loaded.base_dir))
    try:
        plans, errors = table_problems(loaded, loaded.tables, source, destination_capabilities(destination_url))
        problems = [str(e) for e in errors] + capture_problems(loaded, plans, source)
    finally:
        source.close()
    open_destination(destination_url).close()
    for problem in problems:
        err.print(f"[red]error[/]: {escape(redact(problem))}", highlight=False, soft_wrap=True)
    if problems:
        err.print(f"{job_file}: {len(problems)} problem{'s' if len(problems) > 1 else ''} found; nothing was "
                  "created or changed", highlight=False, markup=False)
    return bool(problems)


def _edit_resets(loaded: LoadedJob, state: str | None) -> list[tuple[str, str]]:
    """The tables an edit of the job file makes start over, and why: compared with the definitions the state
    store keeps (read only; a store that does not exist yet has nothing to compare)."""
    from copyjob.summary import edit_resets

    store = existing_state_store(loaded, state)
    if store is None:
        return []
    try:
        return list(edit_resets(store.load_all(loaded.scope), _definitions(loaded)).items())
    finally:
        store.close()


def _definitions(loaded: LoadedJob) -> dict[str, dict[str, Any]]:
    return {t.spec.target_name: t.definition() for t in loaded.tables}


def status(job_file: JobArg, env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
           json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Per-table state (last outcome, watermark, full or incremental next), next scheduled runs, triggers."""

    def body() -> int:
        from copyjob.summary import dumps, edit_resets, print_status, schedule_rows, status_rows, trigger_rows

        loaded = load_job_file(job_file, env, variables)
        store = state_store(loaded, state)
        try:
            states: list[tuple[str, str, TableState]] = [
                (t.spec.target_name, t.mode, store.load(loaded.scope, t.spec.target_name)) for t in loaded.tables]
            schedules = schedule_rows(store, loaded.job, loaded.scope)
            reasons = edit_resets(store.load_all(loaded.scope), _definitions(loaded))
        finally:
            store.close()
        rows = status_rows(states, reasons)
        for row, (_, _, table_state) in zip(rows, states, strict=True):
            row["waiting"] = table_state.extra.get("waiting")  # a stream waiting out an outage (copyjob.cdc)
        cdc = cdc_status(loaded, [s for _, mode, s in states if mode == "cdc"])
        if json_out:
            print(dumps({"job": loaded.job.job, "destination": loaded.destination_identity,
                         "tables": rows, "schedules": schedules,
                         "triggers": trigger_rows(loaded.job), **({"cdc": cdc} if cdc else {})}))
        else:
            print_status(out, loaded.job.job, rows, schedules, trigger_rows(loaded.job))
            for row in rows:
                if row["waiting"]:
                    w = row["waiting"]
                    out.print(f"{row['table']}: waiting for {w['for']} since {w['since']}: {w['error']}",
                              highlight=False, markup=False)
            print_cdc_status(cdc)
        return 0

    raise typer.Exit(guard(body))


def history(job_file: JobArg, env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
            json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
            limit: Annotated[int, typer.Option("--limit", min=1, help="How many runs.")] = 20) -> None:
    """Past runs with rows read and written per table, duration, status and error."""

    def body() -> int:
        from copyjob.summary import dumps, print_history, run_json

        loaded = load_job_file(job_file, env, variables)
        store = state_store(loaded, state)
        try:
            runs = store.history(loaded.scope, limit=limit)
        finally:
            store.close()
        if json_out:
            print(dumps([run_json(r) for r in runs]))
        else:
            print_history(out, runs)
        return 0

    raise typer.Exit(guard(body))


def reset(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
          state: StateOpt = None) -> None:
    """Make the next run of these tables (all when none named) a full copy."""

    def body() -> int:
        from copyjob.runs import new_run_id, select_tables

        loaded = load_job_file(job_file, env, variables)
        chosen = select_tables(loaded, table or None)
        store = state_store(loaded, state)
        try:
            loaded.ledger(store).reset([t.spec.target_name for t in chosen], new_run_id())
        finally:
            store.close()
        names = ", ".join(t.spec.target_name for t in chosen)
        out.print(f"reset: the next run of {names} is a full copy")
        return 0

    raise typer.Exit(guard(body))


def demo(directory: Annotated[Path, typer.Option("--dir", help="Where to put the demo files.")] = Path(
        "demo")) -> None:
    """Make a sample SQLite shop database and copy it into DuckDB (twice: full, then incremental)."""

    def body() -> int:
        from copyjob.demo import run_demo

        return run_demo(directory, out)

    raise typer.Exit(guard(body))
