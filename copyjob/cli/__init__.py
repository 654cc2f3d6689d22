"""The command line: the typer ``app`` and :func:`main`, the console script ``copyjob``.

The commands live in one module per group, each registering its commands here:
:mod:`copyjob.cli.jobs` (run, serve, validate, status, history, reset, demo), :mod:`copyjob.cli.cdc` (check,
drop, stream) and :mod:`copyjob.cli.kafka` (capture, apply, tail, replay). What they share is in
:mod:`copyjob.cli.common`. Imports go one way: this module -> command modules -> common; no command module
imports this one.

Exit codes: 0 success; 1 a table failed (or a system could not be reached); 2 a bad job file, variables
file or command line; 3 skipped because another run of the job held the lock past --wait; 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, NoReturn

import typer

from copyjob.cli import cdc, jobs, kafka
from copyjob.core.private import private_umask

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Move tables between databases: full and incremental copies from one YAML job file.")
jobs.register(app)
cdc.register(app)
kafka.register(app)


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
