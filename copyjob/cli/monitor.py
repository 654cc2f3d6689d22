"""``copyjob monitor`` (watch jobs without running them) and ``serve --http`` (the same page for served jobs).

The page, its API and the token rule are described in docs/monitor.md; the code is in :mod:`copyjob.monitor`,
imported only when a monitor starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from copyjob.cli.common import EnvOpt, StateOpt, VarsOpt, guard, load_job_file, out, state_store, stop_on_signals

if TYPE_CHECKING:
    from copyjob.monitor import Monitor
    from copyjob.monitor.actions import RunStarter
    from copyjob.monitor.feed import Watched
    from copyjob.serve import Server

HttpOpt = Annotated[str | None, typer.Option(
    "--http", metavar="HOST:PORT", help="Serve the monitor page, its JSON API, /metrics and /healthz there (e.g. "
    "127.0.0.1:8080). Off loopback, a token is required.")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", envvar="COPYJOB_TOKEN", show_envvar=True, help="Token the monitor's actions need (and, off "
    "loopback, its API reads).")]
TokenModeOpt = Annotated[bool, typer.Option(
    "--require-token", help="Require the token as off loopback even on a loopback address (behind a proxy).")]


def register(app: typer.Typer) -> None:
    app.command()(monitor)


def monitor(paths: Annotated[list[Path], typer.Argument(help="Job files, or folders: every `*.yaml`/`*.yml` "
                                                        "in it with a job: key.", show_default=False)],
            env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
            http: HttpOpt = "127.0.0.1:8080", token: TokenOpt = None, require_token: TokenModeOpt = False) -> None:
    """Watch jobs in a web page (runs, tables, CDC lag) with Prometheus /metrics, without running them on
    their schedules; "run now" runs a job in this process. Stops on SIGTERM or Ctrl-C."""

    def body() -> int:
        from copyjob.monitor.actions import ThreadRuns
        from copyjob.monitor.feed import WatchedJob
        from copyjob.serve import find_job_files

        watched = []
        for path in find_job_files(paths):
            loaded = load_job_file(path, env, variables)
            watched.append(WatchedJob(loaded, partial(state_store, loaded, state)))
        wake: list[Callable[[], None]] = []  # the feed's, once the monitor is up
        runs = ThreadRuns(on_change=lambda: wake[0]() if wake else None)
        try:
            with _started(watched, runs, http or "127.0.0.1:8080", token, require_token, mode="monitor") as m:
                wake.append(m.feed.wake)
                out.print(f"copyjob monitor: {m.url}", highlight=False)
                with stop_on_signals() as stop:
                    while not stop.wait(1.0):
                        pass
        finally:
            runs.close()
        return 0

    raise typer.Exit(guard(body))


@contextmanager
def serve_monitor(server: Server, http: str | None, token: str | None,
                  require_token: bool = False) -> Iterator[Monitor | None]:
    """``serve --http``: the monitor of the served jobs while the block runs (nothing without ``--http``)."""
    if http is None:
        yield None
        return
    from copyjob.monitor.actions import ServeRuns

    with _started(server.jobs, ServeRuns(server), http, token, require_token, mode="serve") as m:
        server.add_listener(m.feed.wake)
        yield m


@contextmanager
def _started(jobs: Sequence[Watched], runs: RunStarter, http: str, token: str | None, require_token: bool, *,
             mode: str) -> Iterator[Monitor]:
    from copyjob.monitor import Monitor, MonitorOptions
    from copyjob.monitor.access import Address
    from copyjob.monitor.lag import interval_from_env

    _log_to_stderr()
    options = MonitorOptions(Address.parse(http), token=token, force_token=require_token,
                             lag_interval_s=interval_from_env())
    m = Monitor(jobs, runs, options, mode=mode)
    m.start()
    try:
        yield m
    finally:
        m.stop()


def _log_to_stderr() -> None:
    """The monitor's lines (where it listens, actions, failures) like serve's: timestamped, on stderr."""
    from copyjob.logs import handler

    logger = logging.getLogger("copyjob.monitor")
    if not logger.handlers:
        logger.addHandler(handler("%(asctime)s %(levelname)s %(message)s"))
    logger.setLevel(logging.INFO)
    logger.propagate = False
