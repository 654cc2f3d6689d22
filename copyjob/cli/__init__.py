"""The command line: the typer ``app`` and :func:`main`, the console script ``copyjob``.

The commands live in one module per group, each registering its commands here:
:mod:`copyjob.cli.jobs` (run, serve, validate, status, history, reset, demo), :mod:`copyjob.cli.cdc` (check,
drop, stream), :mod:`copyjob.cli.kafka` (capture, apply, tail, replay) and :mod:`copyjob.cli.maintain`
(maintain). What they share is in
:mod:`copyjob.cli.common`. Imports go one way: this module -> command modules -> common; no command module
imports this one.

Exit codes: 0 success; 1 a table failed (or a system could not be reached); 2 a bad job file, variables
file or command line; 3 skipped because another run of the job held the lock past --wait; 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any, NoReturn

import typer

from copyjob.cli import cdc, init, jobs, kafka, maintain, monitor, schema, verify
from copyjob.cli.common import examples, show_flags_as_flags
from copyjob.core.private import private_umask

HELP = """Copy tables and files between systems from one YAML job file.

A job names a source, a destination and tables. Each table is copied **full**, **incremental** (rows
past a watermark column, appended or merged by key) or by **cdc** (a snapshot, then the change stream of
PostgreSQL logical replication or the MySQL/MariaDB binlog). Sources and destinations: PostgreSQL,
MySQL/MariaDB, SQLite, DuckDB, folders and S3 (CSV, Parquet, JSON lines). Data moves directly, or through
Kafka (**transport: kafka**: capture and apply as separate processes).

State (watermarks, change positions, run history) is kept in .copyjob/state.db beside the job file, or in
the store named by --state."""

show_flags_as_flags()
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="markdown", help=HELP,
                  epilog=examples("copyjob demo", "copyjob validate job.yaml --connect", "copyjob run job.yaml",
                                  "copyjob status job.yaml", "copyjob serve jobs/"))


def _version(value: bool) -> None:
    if value:
        from copyjob import __version__

        print(f"copyjob {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print copyjob's version and exit.")] = False,
             log_format: Annotated[str | None, typer.Option(
        "--log-format", metavar="text|json", help="Log lines as text (default) or one JSON object per line "
        "(also COPYJOB_LOG_FORMAT).", show_default=False)] = None) -> None:
    from copyjob import logs
    from copyjob.core.errors import UsageError

    try:
        logs.configure(logs.chosen_format(log_format))
    except UsageError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-format") from None


jobs.register(app)
cdc.register(app)
kafka.register(app)
schema.register(app)
init.register(app)
monitor.register(app)
verify.register(app)
maintain.register(app)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    private_umask()  # what copyjob (and the libraries under it) creates is not readable by other users
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


__all__ = ["app", "main"]
