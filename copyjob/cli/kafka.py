"""Commands of ``transport: kafka``: capture, apply, tail, replay (``copyjob stream`` runs Kafka jobs through
their pipeline too: :func:`copyjob.cli.cdc.stream`, copyjob.engine).

Exit codes as everywhere: 0 success, 1 a table failed or events went to a dead-letter topic, 2 bad input,
3 skipped (the run lock was held), 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from copyjob.cli.common import (
    EnvOpt,
    JobArg,
    StateOpt,
    TablesOpt,
    VarsOpt,
    WaitOpt,
    examples,
    guard,
    load_job_file,
    out,
    state_store,
    stop_on_signals,
)
from copyjob.core.errors import EXIT_SKIPPED, EXIT_TABLE_FAILED, UsageError


def register(app: typer.Typer) -> None:
    app.command(epilog=examples("copyjob capture job.yaml", "copyjob capture job.yaml --table orders"))(capture)
    app.command("apply", epilog=examples("copyjob apply job.yaml", "copyjob apply job.yaml --until-caught-up"))(
        apply_command)
    app.command(epilog=examples("copyjob tail job.yaml --table orders --from-beginning"))(tail)
    app.command(epilog=examples("copyjob replay job.yaml --table orders"))(replay)


def _kafka_job(job_file: Path, env: str | None, variables: Path | None, *, capture: bool = False) -> Any:
    from copyjob.topic_source import is_topic_source, with_topics

    loaded = load_job_file(job_file, env, variables)
    if is_topic_source(loaded.job):
        if capture:
            raise UsageError(f"{job_file}: a kafka:// source's topics are published already: nothing to capture "
                             "(copyjob run or copyjob apply applies them)")
        return with_topics(loaded)  # a pattern entry: the topics it matches now
    if loaded.job.transport != "kafka":
        raise UsageError(f"{job_file}: this command needs transport: kafka (or a kafka:// source) in the job file")
    return loaded


def _exit_code(status: str) -> int:
    return {"ok": 0, "stopped": 0, "skipped": EXIT_SKIPPED}.get(status, EXIT_TABLE_FAILED)


def capture(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
            state: StateOpt = None, wait: WaitOpt = 3600.0) -> None:
    """Kafka: only the producer side: publish each table's changes to its topic and save its position."""

    def body() -> int:
        from copyjob.kafka_pipeline import run_kafka
        from copyjob.runner import JobRun
        from copyjob.summary import print_run, source_names

        loaded = _kafka_job(job_file, env, variables, capture=True)
        job_run = JobRun(loaded, lambda: state_store(loaded, state), lock_wait_s=wait, trigger="capture")
        try:
            with stop_on_signals() as stop:
                job_run.stop = stop
                record = run_kafka(job_run, table or None, apply=False)
        finally:
            job_run.close()
        print_run(out, record, source_names(loaded.tables))
        return _exit_code(record.status)

    raise typer.Exit(guard(body))


def apply_command(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
                  until_caught_up: Annotated[bool, typer.Option("--until-caught-up", help="Stop once the "
                                            "destination holds what the topics held at the start.")] = False,
                  group: Annotated[str | None, typer.Option("--group", help="Consumer group (default: "
                                   "kafka.group_id or copyjob.<job>).")] = None) -> None:
    """Kafka: only the consumer side: apply the topics into the destination until SIGTERM/SIGINT. Start
    several to share the partitions."""

    def body() -> int:
        from copyjob.kafka_pipeline import apply_kafka

        loaded = _kafka_job(job_file, env, variables)
        with stop_on_signals() as stop:
            tables = apply_kafka(loaded, table or None, stop, until_caught_up=until_caught_up, group=group)
        dlq = 0
        for t in tables:
            s = t.stats
            dlq += s.dlq
            out.print(f"{t.name}: {s.events:,} events, {s.upserted:,} upserted, {s.deleted:,} deleted, "
                      f"{s.appended:,} appended" + (f", [red]{s.dlq:,} to {t.dlq}[/]" if s.dlq else ""))
        return EXIT_TABLE_FAILED if dlq else 0

    raise typer.Exit(guard(body))


def tail(job_file: JobArg, table: Annotated[str | None, typer.Option("--table", help="Only this table.")] = None,
         env: EnvOpt = None, variables: VarsOpt = None,
         from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest event "
                                                      "kept instead of new ones.")] = False,
         limit: Annotated[int | None, typer.Option("--max", min=1, help="Stop after this many events.")] = None,
         idle: Annotated[float | None, typer.Option("--idle-timeout", help="Stop when nothing arrived for this "
                                                    "many seconds.")] = None) -> None:
    """Kafka: print the tables' events, decoded, one JSON object a line."""

    def body() -> int:
        from copyjob.kafka_tail import tail_events

        loaded = _kafka_job(job_file, env, variables)
        with stop_on_signals() as stop:
            for event in tail_events(loaded, table, from_beginning=from_beginning, limit=limit,
                                     idle_timeout_s=idle, stop=stop):
                sys.stdout.write(json.dumps(event, default=str) + "\n")
                sys.stdout.flush()
        return 0

    raise typer.Exit(guard(body))


def _timestamp_ms(text: str) -> int:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--to-timestamp {text!r}: use ISO 8601, e.g. 2026-01-31T12:00:00+00:00") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def replay(job_file: JobArg, table: Annotated[str, typer.Option("--table", help="The table to rebuild.")],
           to_timestamp: Annotated[str | None, typer.Option("--to-timestamp", help="Only events published up "
                                                            "to this time (ISO 8601; UTC when no zone).")] = None,
           env: EnvOpt = None, variables: VarsOpt = None) -> None:
    """Kafka: rebuild a destination table from its topic, into a fresh table that replaces the old one."""

    def body() -> int:
        from copyjob.kafka_replay import replay as run_replay

        loaded = _kafka_job(job_file, env, variables)
        ts = _timestamp_ms(to_timestamp) if to_timestamp else None
        with stop_on_signals() as stop:
            result = run_replay(loaded, table, ts, stop)
        out.print(f"replayed {result.table}: {result.events:,} events, {result.rows:,} rows now in the table")
        return 0

    raise typer.Exit(guard(body))


