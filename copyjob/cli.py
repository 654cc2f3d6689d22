"""The command line: run, serve, validate, status, history, reset, demo.

Exit codes: 0 success; 1 a table failed (or a system could not be reached); 2 a bad job file, variables
file or command line; 3 skipped because another run of the job held the lock past --wait; 130 interrupted.
``serve`` exits 0 once stopped by SIGTERM/SIGINT and its running runs have ended (130 on a second signal).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from copyjob.core.errors import EXIT_INTERRUPTED, EXIT_SKIPPED, EXIT_TABLE_FAILED, CopyjobError
from copyjob.core.urls import redact

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Move tables between databases: full and incremental copies from one YAML job file.")
# not a terminal (logs, cron mail): wide enough that summaries are not cut
out = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)
T = TypeVar("T")

JobArg = Annotated[Path, typer.Argument(help="The job file (YAML).", show_default=False)]
EnvOpt = Annotated[str | None, typer.Option("--env", help="Value set of the variable library to use.")]
VarsOpt = Annotated[Path | None, typer.Option("--variables", help="Variable library (default: variables.yaml "
                                              "beside the job file).")]
StateOpt = Annotated[str | None, typer.Option("--state", help="State store: a SQLite path or a PostgreSQL URL "
                                              "(default: .copyjob/state.db beside the job file).")]
TablesOpt = Annotated[list[str] | None, typer.Option("--table", help="Only this table (repeatable).")]


def _guard(action: Callable[[], T]) -> T:
    """Run a command body, turning copyjob errors into one line on stderr and their exit code."""
    try:
        return action()
    except CopyjobError as exc:
        err.print(f"[red]error[/]: {redact(str(exc))}", highlight=False, soft_wrap=True, markup=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _load(job_file: Path, env: str | None, variables: Path | None) -> Any:
    from copyjob.loader import load_job

    return load_job(job_file, variables=variables, env=env)


def _store(loaded: Any, state: str | None) -> Any:
    from copyjob.offsets import default_state_url, open_state_store

    url = state or loaded.job.state
    if url and "://" not in url and not Path(url).is_absolute():
        url = str(loaded.base_dir / url)
    return open_state_store(url or default_state_url(loaded.path))


@app.command()
def run(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
        state: StateOpt = None,
        progress: Annotated[bool, typer.Option(help="Show progress bars on a terminal.")] = True,
        wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for another run of this job to "
                                            "finish before skipping.")] = 3600.0) -> None:
    """Run the job once and print a summary per table."""

    def body() -> int:
        from copyjob.progress import Progress
        from copyjob.runner import JobRun
        from copyjob.summary import print_run

        loaded = _load(job_file, env, variables)
        job_run = JobRun(loaded, lambda: _store(loaded, state), Progress(live=None if progress else False),
                         lock_wait_s=wait)
        try:
            record = job_run.run(table or None)
        finally:
            job_run.close()
        print_run(out, record)
        return {"ok": 0, "skipped": EXIT_SKIPPED}.get(record.status, EXIT_TABLE_FAILED)

    raise typer.Exit(_guard(body))


@app.command()
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
            loaded = _load(path, env, variables)
            jobs.append(served_job(loaded, partial(_store, loaded, state), poll=poll, poll_interval_s=tick))
        server = Server(jobs, tick_s=tick, workers=workers)
        server.install_signal_handlers()
        server.serve()
        return 0

    raise typer.Exit(_guard(body))


def _log_to_stderr(name: str) -> None:
    """One plain line per event, with a timestamp: serve's log is read by people and by log collectors."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@app.command()
def validate(job_file: JobArg, env: EnvOpt = None, variables: VarsOpt = None,
             connect: Annotated[bool, typer.Option("--connect", help="Also reach both ends and check every "
                                                   "table and column.")] = False) -> None:
    """Check the job file (and with --connect, the systems it names)."""

    def body() -> int:
        loaded = _load(job_file, env, variables)
        if connect:
            from copyjob.connectors import destination_capabilities, open_destination, open_source
            from copyjob.filesets import endpoint_url
            from copyjob.preflight import check_tables

            job = loaded.job
            destination_url = endpoint_url(job.destination, loaded.base_dir)
            source = open_source(endpoint_url(job.source, loaded.base_dir))
            try:
                check_tables(loaded, loaded.tables, source, destination_capabilities(destination_url))
            finally:
                source.close()
            open_destination(destination_url).close()
        what = "reached both ends; every table and column checked" if connect else "job file is valid"
        out.print(f"[green]ok[/]: {job_file}: {what} ({len(loaded.tables)} tables)")
        return 0

    raise typer.Exit(_guard(body))


@app.command()
def status(job_file: JobArg, env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
           json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Per-table state (last outcome, watermark, full or incremental next), next scheduled runs, triggers."""

    def body() -> int:
        from copyjob.summary import dumps, print_status, schedule_rows, status_rows, trigger_rows

        loaded = _load(job_file, env, variables)
        store = _store(loaded, state)
        try:
            states = [(t.spec.target_name, t.mode, store.load(loaded.job.job, t.spec.target_name))
                      for t in loaded.tables]
            schedules = schedule_rows(store, loaded.job)
        finally:
            store.close()
        rows = status_rows(states)
        cdc = cli_cdc.cdc_status(loaded, [s for _, mode, s in states if mode == "cdc"])
        if json_out:
            print(dumps({"job": loaded.job.job, "tables": rows, "schedules": schedules,
                         "triggers": trigger_rows(loaded.job), **({"cdc": cdc} if cdc else {})}))
        else:
            print_status(out, loaded.job.job, rows, schedules, trigger_rows(loaded.job))
            cli_cdc.print_cdc_status(cdc)
        return 0

    raise typer.Exit(_guard(body))


@app.command()
def history(job_file: JobArg, env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
            json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
            limit: Annotated[int, typer.Option("--limit", min=1, help="How many runs.")] = 20) -> None:
    """Past runs with rows read and written per table, duration, status and error."""

    def body() -> int:
        from copyjob.summary import dumps, print_history, run_json

        loaded = _load(job_file, env, variables)
        store = _store(loaded, state)
        try:
            runs = store.history(loaded.job.job, limit=limit)
        finally:
            store.close()
        if json_out:
            print(dumps([run_json(r) for r in runs]))
        else:
            print_history(out, runs)
        return 0

    raise typer.Exit(_guard(body))


@app.command()
def reset(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
          state: StateOpt = None) -> None:
    """Make the next run of these tables (all when none named) a full copy."""

    def body() -> int:
        from copyjob.runner import new_run_id, select_tables

        loaded = _load(job_file, env, variables)
        chosen = select_tables(loaded, table or None)
        store = _store(loaded, state)
        try:
            stamp = new_run_id()
            for t in chosen:
                s = store.load(loaded.job.job, t.spec.target_name)
                s.needs_full = True
                s.watermark = None
                s.watermark_type = None
                s.extra["reset_at"] = stamp
                store.save(loaded.job.job, s)
        finally:
            store.close()
        names = ", ".join(t.spec.target_name for t in chosen)
        out.print(f"reset: the next run of {names} is a full copy")
        return 0

    raise typer.Exit(_guard(body))


@app.command()
def demo(directory: Annotated[Path, typer.Option("--dir", help="Where to put the demo files.")] = Path(
        "demo")) -> None:
    """Make a sample SQLite shop database and copy it into DuckDB (twice: full, then incremental)."""

    def body() -> int:
        from copyjob.demo import run_demo

        return run_demo(directory, out)

    raise typer.Exit(_guard(body))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
        code: Any = 0
    except SystemExit as done:
        code = done.code
    _exit_now(code)


def _exit_now(code: Any) -> NoReturn:
    """End the process without the interpreter's teardown, which takes about 70 ms once SQLAlchemy, psycopg
    and Arrow are loaded (a fifth of a short run). Every command has committed and closed what it opened by
    the time it returns; what is left is flushing the output."""
    if sys.gettrace() is not None or sys.getprofile() is not None:  # coverage or a profiler saves at exit
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(int(code or 0))


# the command modules register their commands on `app`: cdc (check, drop, stream), kafka (capture, apply, tail,
# replay)
from copyjob import cli_cdc, cli_kafka  # noqa: E402, F401

if __name__ == "__main__":
    main()
