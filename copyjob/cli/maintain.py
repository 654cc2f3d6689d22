"""``copyjob maintain``: compact and clean up the tables of a lakehouse destination (Delta Lake: optimize
compact, then vacuum; Iceberg: rewrite data files, expire snapshots), table by table.

Change capture into a lakehouse table commits often and leaves many small files; run this from time to time
(a cron schedule, or after a large backfill). Readers are not disturbed: compaction is one more commit, and
only files older than the retention that no current version references are removed.

Exit codes: 0 every table maintained; 1 a table failed; 2 a bad job file or command line, or a destination
that is no lakehouse (nothing to maintain).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from copyjob.cli.common import EnvOpt, JobArg, TablesOpt, VarsOpt, examples, guard, load_job_file, out
from copyjob.core.errors import EXIT_BAD_INPUT, EXIT_TABLE_FAILED, CopyjobError, UsageError

if TYPE_CHECKING:
    from copyjob.core.contracts import MaintenanceReport


def register(app: typer.Typer) -> None:
    app.command(epilog=examples("copyjob maintain job.yaml",
                                "copyjob maintain job.yaml --table orders --retention 14d --dry-run --json"))(maintain)


def maintain(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
             retention: Annotated[str, typer.Option(
                 "--retention", help="Remove unreferenced files (Delta) or snapshots (Iceberg) older than this "
                 "(e.g. 7d, 36h); never shorter than the table's own retention setting.")] = "7d",
             target_size: Annotated[str, typer.Option(
                 "--target-size", help="The size compaction aims for per data file, in MiB.")] = "128",
             dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be done; change nothing.")]
             = False,
             json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Compact small files and remove old ones in each table of a Delta Lake or Iceberg destination."""

    def body() -> int:
        from copyjob.connectors import open_destination
        from copyjob.core.contracts import Maintainable, MaintenanceSettings
        from copyjob.core.errors import error_text
        from copyjob.core.schema import TableName
        from copyjob.filesets import endpoint_url
        from copyjob.jobfile import parse_duration

        try:
            retention_s = parse_duration(retention)
            target_bytes = int(float(target_size) * 2**20)
        except ValueError as exc:
            raise UsageError(f"--retention {retention!r} / --target-size {target_size!r}: {exc}") from None
        loaded = load_job_file(job_file, env, variables)
        settings = MaintenanceSettings(target_file_bytes=target_bytes, retention_s=retention_s, dry_run=dry_run)
        names = [t.spec.target_name for t in loaded.tables
                 if not table or t.spec.target_name in table or t.spec.name in table]
        if table and not names:
            raise UsageError(f"--table {', '.join(table)}: no such table in {job_file}")
        destination = open_destination(endpoint_url(loaded.job.destination, loaded.base_dir))
        try:
            maintainer = destination if isinstance(destination, Maintainable) else None
            if maintainer is None:
                raise UsageError(f"{loaded.job.destination.url}: only lakehouse destinations (format: delta or "
                                 "iceberg) have tables to maintain")
            reports: list[dict[str, object]] = []
            failed = False
            for name in names:
                target = TableName.parse(name)
                if destination.reflect(target) is None:
                    reports.append({"table": name, "skipped": "not created yet"})
                    _say(json_out, f"{name}: not created yet")
                    continue
                try:
                    report = maintainer.maintain(target, settings)
                except CopyjobError as exc:
                    if exc.exit_code == EXIT_BAD_INPUT:  # the command line asks too much (a retention too short)
                        raise
                    failed = True
                    reports.append({"table": name, "error": error_text(exc)})
                    _say(json_out, f"{name}: error: {error_text(exc)}")
                    continue
                reports.append(_as_json(report))
                _say(json_out, _line(report))
        finally:
            destination.close()
        if json_out:
            print(json.dumps({"job": loaded.job.job, "dry_run": dry_run, "tables": reports}))
        return EXIT_TABLE_FAILED if failed else 0

    raise typer.Exit(guard(body))


def _line(report: MaintenanceReport) -> str:
    return f"{report.table}: files {report.files_before} → {report.files_after}; " + "; ".join(report.actions)


def _as_json(report: MaintenanceReport) -> dict[str, object]:
    return {"table": str(report.table), "files_before": report.files_before, "files_after": report.files_after,
            "actions": list(report.actions)}


def _say(json_out: bool, line: str) -> None:
    if not json_out:
        out.print(line, highlight=False, markup=False)


__all__ = ["maintain", "register"]
