"""Commands for change data capture: ``drop``, ``check`` and ``stream``; the slot lag that ``status`` shows
(:func:`cdc_status`). ``stream`` runs the job through its transport's pipeline (copyjob.engine).

Lag: bytes are the WAL the server keeps for the job's slot (``pg_current_wal_lsn() - confirmed_flush_lsn``);
seconds are how long ago the destination was last known to be current (the commit time of the last change
applied, or the last time the stream had applied everything the server had sent), counted only while there
is lag in bytes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from copyjob.cli.common import (
    EnvOpt,
    JobArg,
    StateOpt,
    TablesOpt,
    VarsOpt,
    WaitOpt,
    err,
    examples,
    guard,
    load_job_file,
    out,
    state_store,
    stop_on_signals,
)
from copyjob.core.errors import EXIT_BAD_INPUT, EXIT_SKIPPED, EXIT_TABLE_FAILED, CopyjobError, UsageError
from copyjob.core.urls import redact

if TYPE_CHECKING:  # the job model (pydantic) is imported by commands, not by ``copyjob --help``
    from copyjob.core.contracts import TableState
    from copyjob.loader import LoadedJob


def register(app: typer.Typer) -> None:
    app.command()(check)
    app.command(epilog=examples("copyjob drop job.yaml", "copyjob drop job.yaml --env prod --yes"))(drop)
    app.command(epilog=examples("copyjob stream job.yaml", "copyjob stream job.yaml --env prod --table orders"))(
        stream)


def _postgres(loaded: LoadedJob) -> Any:
    """The job's slot/publication helper, or None when the source is not PostgreSQL."""
    from copyjob.filesets import endpoint_url
    from copyjob.ingest.postgres_cdc.capture import SCHEMES, open_setup

    url = endpoint_url(loaded.job.source, loaded.base_dir)
    if url.scheme not in SCHEMES:
        return None
    return open_setup(url, loaded.stream_name, loaded.job.cdc.as_capture_options())


def cdc_status(loaded: LoadedJob, states: Sequence[TableState]) -> dict[str, Any] | None:
    """The job's replication slot and its lag (None when the job has no cdc tables or no slot concept).
    Never raises for an unreachable source: the problem is reported in ``error``."""
    if not loaded.cdc_tables:
        return None
    settings = loaded.job.cdc
    info: dict[str, Any] = {"max_lag_bytes": settings.max_lag_bytes, "max_lag_seconds": settings.max_lag_seconds,
                            "warnings": [], "error": None}
    try:
        setup = _postgres(loaded)
        if setup is None:
            return None
        try:
            slot = setup.slot_info()
        finally:
            setup.close()
    except CopyjobError as exc:
        info["error"] = redact(str(exc))
        return info
    fresh = max((float(s.extra.get("cdc_fresh_at") or 0) for s in states), default=0.0)
    streamed = any(s.extra.get("cdc_position") for s in states)
    info.update(slot=setup.slot, publication=setup.publication, exists=slot is not None,
                active=bool(slot and slot.active_pid), lag_bytes=slot.lag_bytes if slot else None,
                lag_seconds=None, wal_status=slot.wal_status if slot else None)
    if slot is not None and slot.lag_bytes is not None:
        info["lag_seconds"] = 0.0 if slot.lag_bytes <= 0 else (round(time.time() - fresh, 1) if fresh else None)
    warnings: list[str] = info["warnings"]
    if slot is None and streamed:
        warnings.append(f"replication slot {setup.slot} is gone: the next run snapshots the tables again")
    if slot is not None and slot.wal_status == "lost":
        warnings.append(f"replication slot {setup.slot} lost WAL it needed: copyjob drop, then run again")
    if settings.max_lag_bytes is not None and (info["lag_bytes"] or 0) > settings.max_lag_bytes:
        warnings.append(f"lag {info['lag_bytes']:,} bytes is above max_lag_bytes {settings.max_lag_bytes:,}")
    if settings.max_lag_seconds is not None and (info["lag_seconds"] or 0) > settings.max_lag_seconds:
        warnings.append(f"lag {info['lag_seconds']} s is above max_lag_seconds {settings.max_lag_seconds}")
    return info


def print_cdc_status(info: dict[str, Any] | None) -> None:
    if info is None:
        return
    if info["error"]:
        out.print(f"[yellow]cdc[/]: cannot read the replication slot: {info['error']}", soft_wrap=True)
        return
    if not info["exists"]:
        out.print(f"cdc: replication slot {info['slot']} does not exist yet (the first run creates it)",
                  highlight=False)
    else:
        seconds = "-" if info["lag_seconds"] is None else f"{info['lag_seconds']:,} s"
        out.print(f"cdc: slot {info['slot']} ({'streaming' if info['active'] else 'idle'}), publication "
                  f"{info['publication']}: lag {info['lag_bytes']:,} bytes, {seconds}", highlight=False)
    for warning in info["warnings"]:
        out.print(f"[yellow]warning[/]: {warning}", soft_wrap=True)


def check(job_file: JobArg, env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print the problems as a JSON list (empty when "
                                                "healthy).")] = False,
          max_age: Annotated[str | None, typer.Option("--max-age", help="Fail when a table's last successful "
                                                      "run is older than this (e.g. 26h); overrides the job "
                                                      "file's check.max_age.")] = None) -> None:
    """For monitoring: exit 1 with one line per problem when a table's last run failed, the last success is
    older than check.max_age, or the change capture lags above cdc.max_lag_bytes/max_lag_seconds or lost its
    slot; 0 when healthy."""

    def body() -> int:
        import json

        from copyjob.health import job_problems
        from copyjob.jobfile import CheckSettings

        loaded = load_job_file(job_file, env, variables)
        try:
            override = None if max_age is None else CheckSettings(max_age=max_age)
        except ValueError as exc:
            raise UsageError(f"--max-age {max_age}: {exc}") from None
        store = state_store(loaded, state)
        try:
            states = [store.load(loaded.scope, name) for name in loaded.cdc_tables]
            problems = job_problems(loaded, store, cdc_status(loaded, states), max_age=override)
        finally:
            store.close()
        if as_json:
            print(json.dumps([p.as_json() for p in problems], default=str))
        elif problems:
            for problem in problems:
                out.print(problem.line(), soft_wrap=True, highlight=False, markup=False)
        else:
            out.print(f"ok: {job_file}", highlight=False)
        return EXIT_TABLE_FAILED if problems else 0

    raise typer.Exit(guard(body))


def drop(job_file: JobArg, env: EnvOpt = None, variables: VarsOpt = None, state: StateOpt = None,
         yes: Annotated[bool, typer.Option("--yes", help="Really drop them.")] = False) -> None:
    """Remove the replication slot and the publication the job created (its cdc tables are snapshotted again
    by the next run)."""

    def body() -> int:
        from copyjob.runs import new_run_id

        loaded = load_job_file(job_file, env, variables)
        setup = _postgres(loaded)
        if setup is None:
            out.print(f"{job_file}: the source keeps no replication slot for this job: nothing to drop")
            return 0
        try:
            if not yes:
                found = setup.publication_tables()
                what = [f"replication slot {setup.slot}"] if setup.slot_info() is not None else []
                if found is not None and found[1]:
                    what.append(f"publication {setup.publication}")
                if not what:
                    out.print("nothing to drop: no slot and no publication of this job")
                    return 0
                err.print(f"this drops {' and '.join(what)} on {setup.where}; run again with --yes",
                          highlight=False, soft_wrap=True)
                return EXIT_BAD_INPUT
            dropped = setup.drop()
        finally:
            setup.close()
        store = state_store(loaded, state)
        try:
            loaded.ledger(store).reset(loaded.cdc_tables, new_run_id())
        finally:
            store.close()
        out.print(f"dropped {' and '.join(dropped)}" if dropped else "nothing to drop", highlight=False)
        return 0

    raise typer.Exit(guard(body))


def stream(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
           state: StateOpt = None,
           wait: WaitOpt = 3600.0,
           poll_interval: Annotated[float, typer.Option(
               "--poll-interval", help="Seconds between two reads of a polled source (watermark tables and file "
               "sets through Kafka).")] = 0.5) -> None:
    """Keep capturing and applying changes until SIGTERM/SIGINT."""

    def body() -> int:
        from copyjob.runner import JobRun
        from copyjob.summary import print_run, source_names

        loaded = load_job_file(job_file, env, variables)
        job_run = JobRun(loaded, lambda: state_store(loaded, state), trigger="stream", lock_wait_s=wait)
        try:
            with stop_on_signals() as stop:
                job_run.stop = stop
                record = job_run.stream(table or None, poll_interval_s=poll_interval)
        finally:
            job_run.close()
        print_run(out, record, source_names(job_run.loaded.tables))  # with the topics a pattern matched
        return {"ok": 0, "stopped": 0, "skipped": EXIT_SKIPPED}.get(record.status, EXIT_TABLE_FAILED)

    raise typer.Exit(guard(body))
