"""What every command module of the CLI shares: the consoles, the options named alike everywhere, loading the
job file and opening its state store, turning copyjob errors into exit codes, and stopping on signals.

Only typer, rich and copyjob's small vocabulary are imported here: ``copyjob --help`` loads this module, and
must not load pyarrow, SQLAlchemy or confluent_kafka.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from copyjob.core.errors import EXIT_INTERRUPTED, CopyjobError, JobFileError
from copyjob.core.urls import redact

if TYPE_CHECKING:  # the job model (pydantic) is imported by commands, not by ``copyjob --help``
    from copyjob.core.contracts import StateStore
    from copyjob.loader import LoadedJob

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
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for another run of this job to finish "
                                        "before skipping.")]


def examples(*lines: str) -> str:
    """A command's help epilog: example command lines (markdown: the help joins the lines of a paragraph)."""
    return "**Examples**\n\n" + "\n\n".join(f"`{line}`" for line in lines)


def show_flags_as_flags() -> None:
    """typer (0.2x) prints ``<bool>`` beside options that take no value (``--connect``, ``--help``); a flag is
    complete by its name, so print no type for it."""
    from typer.core import TyperOption

    typed = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag and self.metavar is None else typed(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def guard(action: Callable[[], T]) -> T:
    """Run a command body, turning copyjob errors into one line on stderr and their exit code."""
    try:
        return action()
    except CopyjobError as exc:
        print_error(exc)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def print_error(exc: CopyjobError) -> None:
    """``error: …`` on stderr, one line per problem of a job file (all of them, found in one pass)."""
    lines = [str(p) for p in exc.problems] if isinstance(exc, JobFileError) else [str(exc)]
    for line in lines:
        err.print(f"[red]error[/]: {escape(redact(line))}", highlight=False, soft_wrap=True, markup=True)


def load_job_file(job_file: Path, env: str | None, variables: Path | None) -> LoadedJob:
    from copyjob.loader import load_job

    return load_job(job_file, variables=variables, env=env)


def state_store(loaded: LoadedJob, state: str | None) -> StateStore:
    """The store named by --state, else by the job file's ``state:``, else the default beside the job file."""
    return loaded.state_store(state)


def existing_state_store(loaded: LoadedJob, state: str | None) -> StateStore | None:
    """The store :func:`state_store` names, only when it exists already (SQLite: its file), opened without
    adopting anything: for commands that write nothing."""
    return existing_store_at(loaded.path, state or loaded.job.state)


def existing_store_at(job_file: Path, url: str | None) -> StateStore | None:
    """The store at ``url`` (relative to the job file; default beside it) when it exists already."""
    from copyjob.offsets import default_state_url, open_state_store

    if url and "://" not in url and not Path(url).is_absolute():
        url = str(job_file.parent / url)
    url = url or default_state_url(job_file)
    if "://" not in url or url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:") else url
        if not Path(path).exists():
            return None
    return open_state_store(url)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by the first SIGTERM/SIGINT (a second SIGINT interrupts at once)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        err.print(f"stopping ({signal.Signals(signum).name}): finishing the current batch")
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
