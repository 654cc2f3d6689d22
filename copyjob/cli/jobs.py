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
    err,
    examples,
    existing_state_store,
    existing_store_at,
    guard,
    load_job_file,
    out,
    state_store,
)
from copyjob.cli.monitor import HttpOpt, TokenModeOpt, TokenOpt, serve_monitor
from copyjob.core.errors import EXIT_BAD_INPUT, EXIT_SKIPPED, EXIT_TABLE_FAILED

if TYPE_CHECKING:
    from copyjob.core.contracts import TableState
    from copyjob.loader import LoadedJob


EXAMPLES = {
    "run": ("copyjob run job.yaml", "copyjob run job.yaml --env prod --table orders",
          "copyjob run job.yaml --state postgresql://copyjob@statehost/copyjob"),
    "serve": ("copyjob serve jobs/", "copyjob serve nightly.yaml hourly.yaml --env prod --workers 4"),
    "validate": ("copyjob validate job.yaml", "copyjob validate job.yaml --env prod --connect"),
    "status": ("copyjob status job.yaml", "copyjob status job.yaml --json"),
    "history": ("copyjob history job.yaml --limit 5", "copyjob history job.yaml --json"),
    "reset": ("copyjob reset job.yaml --table orders", "copyjob reset job.yaml"),
    "demo": ("copyjob demo", "copyjob demo --dir /tmp/copyjob-demo"),
}


def register(app: typer.Typer) -> None:
    for command in (run, serve, validate, status, history, reset, demo):
        app.command(epilog=examples(*EXAMPLES[command.__name__]))(command)


def run(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
        state: StateOpt = None,
        no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars (they show only on a "
                                                  "terminal).")] = False,
        wait: WaitOpt = 3600.0) -> None:
    """Run the job once and print a summary per table."""

    def body() -> int:
        from copyjob.progress import Progress
        from copyjob.runner import JobRun
        from copyjob.summary import print_run, source_names

        loaded = load_job_file(job_file, env, variables)
        job_run = JobRun(loaded, lambda: state_store(loaded, state), Progress(live=False if no_progress else None),
                         lock_wait_s=wait)
        try:
            record = job_run.run(table or None)
        finally:
            job_run.close()
        print_run(out, record, source_names(job_run.loaded.tables))  # with the topics a pattern matched
        return {"ok": 0, "skipped": EXIT_SKIPPED}.get(record.status, EXIT_TABLE_FAILED)

    raise typer.Exit(guard(body))


def serve(paths: Annotated[list[Path], typer.Argument(help="Job files, or folders: every *.yaml/*.yml in it "
                                                      "with a job: key.", show_default=False)],
          env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
          poll: Annotated[bool, typer.Option("--poll", help="Poll trigger folders instead of waiting for file "
                                             "events (for filesystems that send none).")] = False,
          workers: Annotated[int | None, typer.Option("--workers", min=1, help="Jobs running at once "
                                                      "(default: one per job, at most 8).")] = None,
          http: HttpOpt = None, token: TokenOpt = None, require_token: TokenModeOpt = False) -> None:
    """Run jobs on their schedules and file-arrival triggers until SIGTERM or Ctrl-C."""

    def body() -> int:
        from copyjob.serve import Server, find_job_files, served_job, served_jobs, tick_from_env

        _log_to_stderr("copyjob.serve")
        tick = tick_from_env()
        jobs = served_jobs(  # a job file that does not load is a failed run in its history; the others run
            find_job_files(paths), lambda path: load_job_file(path, env, variables),
            lambda loaded, path: served_job(loaded, partial(state_store, loaded, state), poll=poll,
                                            poll_interval_s=tick, reload=partial(load_job_file, path, env, variables)),
            state)
        server = Server(jobs, tick_s=tick, workers=workers)
        server.install_signal_handlers()
        with serve_monitor(server, http, token, require_token):  # the web monitor, with --http
            server.serve()
        return 0

    raise typer.Exit(guard(body))


def _log_to_stderr(name: str) -> None:
    """One plain line per event, with a timestamp: serve's log is read by people and by log collectors."""
    from copyjob.logs import handler as log_handler

    logger = logging.getLogger(name)
    handler = log_handler("%(asctime)s %(levelname)s %(message)s")  # JSON with --log-format json
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

    from copyjob.connectors import destination_capabilities, open_destination, open_source
    from copyjob.core.redaction import redact
    from copyjob.filesets import endpoint_url
    from copyjob.preflight import capture_problems, table_problems
    from copyjob.topic_source import is_topic_source, topic_problems

    destination_url = endpoint_url(loaded.job.destination, loaded.base_dir)
    source = open_source(endpoint_url(loaded.job.source, loaded.base_dir))
    try:
        if is_topic_source(loaded.job):  # its entries name topics, whose events carry their columns
            problems = topic_problems(loaded, [str(t) for t in source.table_names()])
        else:
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
    """Per-table state (last outcome, watermark, full or incremental next), next scheduled runs, triggers.

    Needs only the job's name and its state: when variables that feed the connection URLs are not set, the
    state is read from the store as it is, under the destination when its URL resolves, else under every
    destination the job ran into (then without schedules, triggers and CDC lag, which need the whole job)."""

    def body() -> int:
        from copyjob.state_view import StateOnly
        from copyjob.summary import (
            dumps,
            edit_resets,
            print_status,
            schedule_rows,
            source_names,
            status_rows,
            trigger_rows,
        )
        from copyjob.topic_source import from_state
        from copyjob.verify import last_verification

        loaded = _loaded_or_state_only(job_file, env, variables)
        if isinstance(loaded, StateOnly):
            return _status_from_state(loaded, state, json_out)
        store = state_store(loaded, state)
        try:
            loaded = from_state(loaded, store.load_all(loaded.scope))  # the topics a pattern matched
            states: list[tuple[str, str, TableState]] = [
                (t.spec.target_name, t.mode, store.load(loaded.scope, t.spec.target_name)) for t in loaded.tables]
            schedules = schedule_rows(store, loaded.job, loaded.scope)
            reasons = edit_resets(store.load_all(loaded.scope), _definitions(loaded))
            verified = {name: last_verification(store, loaded.scope, name) for name, _, _ in states}
        finally:
            store.close()
        rows = status_rows(states, reasons)
        for row, (name, _, table_state) in zip(rows, states, strict=True):
            row["waiting"] = table_state.extra.get("waiting")  # a stream waiting out an outage (copyjob.cdc)
            row["verified"] = verified[name]  # the last `copyjob verify` (copyjob.verify.job)
        cdc = cdc_status(loaded, [s for _, mode, s in states if mode == "cdc"])
        if json_out:
            print(dumps({"job": loaded.job.job, "destination": loaded.destination_identity,
                         "tables": rows, "schedules": schedules,
                         "triggers": trigger_rows(loaded.job), **({"cdc": cdc} if cdc else {})}))
        else:
            print_status(out, loaded.job.job, rows, schedules, trigger_rows(loaded.job),
                         sources=source_names(loaded.tables), destination=loaded.destination_identity)
            for row in rows:
                if row["waiting"]:
                    w = row["waiting"]
                    out.print(f"{row['table']}: waiting for {w['for']} since {w['since']}: {w['error']}",
                              highlight=False, markup=False)
                if row["verified"]:
                    v = row["verified"]
                    out.print(f"{row['table']}: last verified {v['at']}: {v['summary']}", highlight=False, markup=False)
            print_cdc_status(cdc)
        return 0

    raise typer.Exit(guard(body))


def history(job_file: JobArg, env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
            json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
            limit: Annotated[int, typer.Option("--limit", min=1, help="How many runs.")] = 20) -> None:
    """Past runs: per table rows read and written, duration, rows/s, the watermark it moved, status and error.

    Like status, works from the state alone when variables that feed the connection URLs are not set."""

    def body() -> int:
        from copyjob.state_view import StateOnly
        from copyjob.summary import dumps, print_history, run_json, source_names, stored_source_names

        loaded = _loaded_or_state_only(job_file, env, variables)
        if isinstance(loaded, StateOnly):
            return _history_from_state(loaded, state, json_out, limit)
        store = state_store(loaded, state)
        try:
            runs = store.history(loaded.scope, limit=limit)
            sources = {**stored_source_names(store.load_all(loaded.scope)), **source_names(loaded.tables)}
        finally:
            store.close()
        if json_out:
            print(dumps([run_json(r) for r in runs]))
        else:
            print_history(out, runs, sources)
        return 0

    raise typer.Exit(guard(body))


def _loaded_or_state_only(job_file: Path, env: str | None, variables: Path | None) -> Any:
    """The loaded job; or, when only variables outside ``job:`` and ``state:`` are unresolved, what the job
    file says about its state (:class:`copyjob.state_view.StateOnly`), after a note naming them."""
    from copyjob.core.errors import JobFileError
    from copyjob.state_view import only_unresolved_urls, read_state_only

    try:
        return load_job_file(job_file, env, variables)
    except JobFileError as exc:
        if not only_unresolved_urls(exc):
            raise
        view = read_state_only(job_file, env, variables, exc)
    for problem in view.unresolved:
        err.print(f"note: {problem}", highlight=False, markup=False, soft_wrap=True)
    where = f"under {view.destination}" if view.destination else "under every destination in the store"
    err.print(f"note: reading the state of {view.job} alone, {where}", highlight=False, markup=False)
    return view


def _view_states(view: Any, state: str | None) -> list[tuple[str, Any]]:
    """(scope, store) for each scope of the job; the store is None when it does not exist."""
    from copyjob.core.scope import state_scope
    from copyjob.state_view import job_scopes

    store = existing_store_at(view.path, state or view.state)
    if store is None:
        return []
    scopes = [state_scope(view.job, view.destination)] if view.destination else job_scopes(store, view.job)
    return [(scope, store) for scope in scopes] or [("", store)]


def _status_from_state(view: Any, state: str | None, json_out: bool) -> int:
    from copyjob.core.scope import split_scope
    from copyjob.state_view import stored_modes
    from copyjob.summary import dumps, print_status, status_rows, stored_source_names

    found = []
    pairs = _view_states(view, state)
    try:
        for scope, store in pairs:
            states = store.load_all(scope) if scope else {}
            modes = stored_modes(store, scope, states) if scope else {}
            rows = status_rows([(label, modes[label], s) for label, s in states.items()])
            found.append((split_scope(scope)[1] if scope else view.destination, rows, stored_source_names(states)))
    finally:
        if pairs:
            pairs[0][1].close()
    if json_out:
        print(dumps({"job": view.job, "unresolved": [str(p) for p in view.unresolved],
                     "destinations": [{"destination": d, "tables": rows} for d, rows, _ in found]}))
        return 0
    if not found:
        out.print(f"copyjob status {view.job}: no state yet", highlight=False, markup=False)
    for destination, rows, sources in found:
        print_status(out, view.job, rows, sources=sources, destination=destination)
    return 0


def _history_from_state(view: Any, state: str | None, json_out: bool, limit: int) -> int:
    from copyjob.core.scope import split_scope
    from copyjob.summary import dumps, print_history, run_json, stored_source_names

    found = []
    pairs = _view_states(view, state)
    try:
        for scope, store in pairs:
            if scope:
                found.append((split_scope(scope)[1], store.history(scope, limit=limit),
                              stored_source_names(store.load_all(scope))))
    finally:
        if pairs:
            pairs[0][1].close()
    if json_out:
        print(dumps(sorted((run_json(r) for _, runs, _ in found for r in runs), key=lambda r: r["started_at"],
                           reverse=True)[:limit]))
        return 0
    for destination, runs, sources in found:
        print_history(out, runs, sources, title=f"copyjob history {view.job} into {destination}")
    return 0


def reset(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
          state: StateOpt = None) -> None:
    """Make the next run of these tables (all when none named) a full copy."""

    def body() -> int:
        from copyjob.runs import new_run_id, select_tables
        from copyjob.topic_source import from_state

        loaded = load_job_file(job_file, env, variables)
        store = state_store(loaded, state)
        try:
            loaded = from_state(loaded, store.load_all(loaded.scope))  # the topics a pattern matched
            chosen = select_tables(loaded, table or None)
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
