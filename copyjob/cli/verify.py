"""``copyjob verify``: compare each table of a job in its source and its destination (hashes per key range
computed inside both databases, bisected down to the differing rows), and with ``--repair`` re-copy exactly
the keys that differ.

Exit codes: 0 every table equal (or repaired and verified equal); 1 a table differs or could not be compared;
2 a bad job file or command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from copyjob.cli.common import EnvOpt, JobArg, StateOpt, TablesOpt, VarsOpt, guard, load_job_file, out, state_store
from copyjob.core.errors import EXIT_TABLE_FAILED

if TYPE_CHECKING:
    from copyjob.verify import TableReport


def register(app: typer.Typer) -> None:
    app.command()(verify)


def verify(job_file: JobArg, table: TablesOpt = None, env: EnvOpt = None, variables: VarsOpt = None,
           state: StateOpt = None,
           repair: Annotated[bool, typer.Option("--repair", help="Re-copy the missing and differing keys and "
                                                "delete the extra ones (merge tables), then verify them again.")]
           = False,
           json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
           max_rows: Annotated[int, typer.Option("--max-rows", min=0, help="Keys listed per kind (missing, "
                                                 "extra, different) and table.")] = 20,
           settle: Annotated[float, typer.Option("--settle", min=0, help="CDC tables: seconds to keep "
                                                 "re-checking differing keys while the stream catches up.")]
           = 30.0) -> None:
    """Compare the destination with the source, table by table, and report the keys that differ."""

    def body() -> int:
        from datetime import UTC, datetime

        from copyjob.runs import new_run_id
        from copyjob.summary import dumps
        from copyjob.verify import VerifyOptions, record, verify_job

        loaded = load_job_file(job_file, env, variables)
        started = datetime.now(UTC)

        def show(report: TableReport) -> None:
            if not json_out:
                for line in report.lines(max_rows):
                    out.print(line, highlight=False, markup=False)

        reports = verify_job(loaded, table or None, VerifyOptions(repair=repair, settle_s=settle), show)
        store = state_store(loaded, state)
        try:
            record(store, loaded.scope, new_run_id(), started, reports)
        finally:
            store.close()
        if json_out:
            print(dumps({"job": loaded.job.job, "equal": all(r.ok for r in reports),
                         "tables": [r.to_json(max_rows) for r in reports]}))
        return 0 if all(r.ok for r in reports) else EXIT_TABLE_FAILED

    raise typer.Exit(guard(body))


__all__ = ["register", "verify"]
