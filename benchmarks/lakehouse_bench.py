"""Lakehouse benchmark: PostgreSQL → Delta Lake tables, copyjob against dlt's filesystem destination with
``table_format="delta"``, on the same data in the same run, on a throwaway PostgreSQL 15.

    .venv/bin/python -m benchmarks.lakehouse_bench [--rows 1000000] [--changes 100000] [--dlt-python PATH]
    .venv/bin/python -m benchmarks.run --lakehouse          (the same, from make bench's entry point)

1. *full copy*: ``public.orders`` (``--rows``) into a fresh Delta table; copyjob ``mode: full`` (overwrite),
   dlt ``write_disposition="replace"``.
2. *changes applied as merges*: ``--changes`` changes committed at the source (nine in ten update a row, one in
   ten inserts one), then applied to a Delta table that holds the first copy: copyjob reads them from the WAL
   (``mode: cdc``, merge: one MERGE per chunk of changes, with the marker in its commit; measured with the
   default chunks, ``cdc.batch_events`` 10,000 and ``max_batch_delay`` 200 ms, and with chunks of the whole
   backlog, ``batch_events`` = ``--changes`` and ``max_batch_delay`` 10 s); dlt has no change
   capture from PostgreSQL, so it reads the changed rows by their ``updated_at`` cursor
   (``dlt.sources.incremental``) and upserts them (``write_disposition={"disposition": "merge",
   "strategy": "upsert"}``). Both start from the same table state; only the catch-up run is measured.

Each tool runs as its own process (benchmarks/measure.py: wall time, peak RSS of the process tree, CPU), dlt
from ``--dlt-python`` (a Python with ``dlt[sql_database,deltalake]`` and psycopg2). After each step the table
is read with deltalake and compared with the source (row count and a fingerprint). Files written: the Parquet
files a step added to the table's folder. Prints a markdown table and writes ``benchmarks/results/lakehouse.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.measure import Measurement
# the rest of copyjob's modules are imported where used: ``--dlt-side`` runs in dlt's Python, without them

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lakehouse.json"
SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min", "wal_level": "logical"}
CHANGES_SQL = """
UPDATE orders SET status = 'changed', amount = amount + 1, updated_at = now() WHERE id %% 10 <> 0 AND id <= {upd};
INSERT INTO orders (id, customer_id, name, amount, status, created_at, updated_at)
  SELECT g, g %% 1000, 'new ' || g, 1.00, 'new', now(), now() FROM generate_series({first}, {last}) g;
"""


def say(message: str) -> None:
    print(f"[lakehouse-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the dlt side (run in dlt's Python)


def dlt_side(src: str, lake: str, work: str, disposition: str) -> None:
    """``python benchmarks/lakehouse_bench.py --dlt-side``: one dlt pipeline run into a Delta table."""
    import dlt
    from dlt.sources.sql_database import sql_table

    incremental = dlt.sources.incremental("updated_at") if disposition == "merge" else None
    source = sql_table(credentials=src, schema="public", table="orders", backend="pyarrow",
                       incremental=incremental)
    pipeline = dlt.pipeline(pipeline_name=f"lake_{disposition}", pipelines_dir=work,
                            destination=dlt.destinations.filesystem(bucket_url=lake), dataset_name="dlt")
    how: Any = ({"disposition": "merge", "strategy": "upsert"} if disposition == "merge" else "replace")
    info = pipeline.run(source, write_disposition=how, primary_key="id", table_format="delta")
    print(json.dumps({"dlt_version": dlt.__version__, "failed": info.has_failed_jobs}))


# ---------------------------------------------------------------- helpers


def data_files(table: Path) -> set[str]:
    return {str(p.relative_to(table)) for p in table.rglob("*.parquet") if "_delta_log" not in p.parts}


def delta_facts(table: Path) -> tuple[int, str]:
    """Rows and a fingerprint of the Delta table as deltalake reads it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    read = pa.table(DeltaTable(str(table)).to_pyarrow_table(columns=["id", "amount", "status"]))
    amount = pc.sum(read["amount"]).as_py()
    changed = pc.sum(pc.equal(read["status"], "changed").cast("int64")).as_py()
    return read.num_rows, f"{pc.sum(read['id']).as_py()}/{amount}/{changed}"


def source_facts(url: str) -> tuple[int, str]:
    from benchmarks.pgdata import scalar

    rows = scalar(url, "SELECT count(*) FROM orders")
    fingerprint = scalar(url, "SELECT sum(id) || '/' || sum(amount) || '/' || "
                              "count(*) FILTER (WHERE status = 'changed') FROM orders")
    return int(rows), str(fingerprint)


def copyjob_job(work: Path, name: str, src: str, lake: Path, mode: str, method: str,
                batch_events: int | None = None) -> Path:
    path = work / f"{name}.yaml"
    job: dict[str, Any] = {
        "job": name, "source": {"url": src}, "destination": {"url": str(lake), "format": "delta"},
        "copy": {"mode": mode, "update_method": method}, "tables": [{"name": "public.orders", "target": "orders"}]}
    if batch_events:  # larger chunks: fewer MERGEs, each rewriting the files its keys touch
        job["cdc"] = {"batch_events": batch_events, "max_batch_delay": "10s"}
    path.write_text(json.dumps(job))
    return path


def measured(command: list[str], work: Path, name: str, env: dict[str, str] | None = None) -> Measurement:
    from benchmarks.measure import run_measured

    m = run_measured(command, log_dir=work / "logs", name=name, env=env, cwd=ROOT, timeout_s=3600)
    if not m.ok:
        raise RuntimeError(f"{name}: {m.error_text()}")
    return m


def line(tool: str, step: str, rows: int, m: Measurement, files: int, equal: bool) -> dict[str, Any]:
    result = {"tool": tool, "step": step, "rows": rows, "seconds": round(m.seconds, 2),
              "rows_per_s": round(rows / m.seconds), "peak_rss_mb": round(m.peak_rss_mb),
              "cpu_seconds": round(m.cpu_seconds, 1), "files_written": files, "equal": equal}
    say(f"  {tool} {step}: {result['rows_per_s']:,} rows/s, {result['peak_rss_mb']} MB, {files} files, "
        f"equal: {equal}")
    return result


# ---------------------------------------------------------------- the steps


def copyjob_steps(base: str, work: Path, rows: int, changes: int) -> list[dict[str, Any]]:
    run = [sys.executable, "-m", "copyjob", "run", "--no-progress"]
    src = database(base, "cj_src", rows)
    full_lake = work / "cj_full"
    job = copyjob_job(work, "cj_full", src, full_lake, "full", "overwrite")
    say("copyjob: full copy")
    m = measured([*run, str(job)], work, "copyjob_full")
    out = [line("copyjob", "full copy", rows, m, len(data_files(full_lake / "orders")),
                delta_facts(full_lake / "orders") == source_facts(src))]
    # the default chunk of changes (cdc.batch_events 10,000), then chunks as large as the whole backlog
    for batch_events in (None, changes):
        name = f"cj_cdc_{batch_events or 'default'}"
        src = database(base, f"{name}_src", rows)
        lake = work / name
        job = copyjob_job(work, name, src, lake, "cdc", "merge", batch_events)
        say(f"copyjob ({name}): snapshot (not measured), then the changes")
        measured([*run, str(job)], work, f"{name}_snapshot")
        before = data_files(lake / "orders")
        run_sql(src, changes_sql(rows, changes))
        m = measured([*run, str(job)], work, f"{name}_changes")
        step = "changes as merges (CDC" + (f", batch_events {batch_events:,}, max_batch_delay 10s)"
                                           if batch_events else ")")
        out.append(line("copyjob", step, changes, m, len(data_files(lake / "orders") - before),
                        delta_facts(lake / "orders") == source_facts(src)))
    return out


def dlt_steps(base: str, work: Path, rows: int, changes: int, python: str) -> list[dict[str, Any]]:
    side = [python, str(Path(__file__).resolve()), "--dlt-side"]
    src = database(base, "dlt_src", rows)
    sa_url = src.replace("postgresql://", "postgresql+psycopg2://", 1)
    env = {"RUNTIME__LOG_LEVEL": "WARNING", "NORMALIZE__DATA_WRITER__DISABLE_COMPRESSION": "false"}
    full_lake = work / "dlt_full"
    say("dlt: full copy")
    m = measured([*side, sa_url, full_lake.as_uri(), str(work / "dlt_pipelines"), "replace"], work, "dlt_full", env)
    table = full_lake / "dlt" / "orders"
    out = [line("dlt", "full copy", rows, m, len(data_files(table)), delta_facts(table) == source_facts(src))]
    merge_lake = work / "dlt_merge"
    say("dlt: first load (not measured), then the changed rows")
    args = [sa_url, merge_lake.as_uri(), str(work / "dlt_pipelines"), "merge"]
    measured([*side, *args], work, "dlt_first", env)
    table = merge_lake / "dlt" / "orders"
    before = data_files(table)
    run_sql(src, changes_sql(rows, changes))
    m = measured([*side, *args], work, "dlt_changes", env)
    out.append(line("dlt", "changed rows upserted (merge)", changes, m, len(data_files(table) - before),
                    delta_facts(table) == source_facts(src)))
    return out


def run_sql(url: str, statements: list[str]) -> None:
    from benchmarks.pgdata import exec_sql

    exec_sql(url, *statements)


def changes_sql(rows: int, changes: int) -> list[str]:
    """``changes`` changes: nine in ten update existing rows (ids up to ``upd`` but multiples of 10), one in
    ten inserts a new row."""
    inserts = changes // 10
    updates = changes - inserts
    upd = updates * 10 // 9
    text = CHANGES_SQL.format(upd=upd, first=rows + 1, last=rows + inserts).replace("%%", "%")
    return [s.strip() for s in text.split(";") if s.strip()]


def database(base: str, name: str, rows: int) -> str:
    from benchmarks.pgdata import create_orders, exec_sql

    exec_sql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    url = base.rsplit("/", 1)[0] + "/" + name
    create_orders(url, rows)
    return url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lakehouse_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--changes", type=int, default=100_000)
    p.add_argument("--dlt-python", default=sys.executable, help="a Python with dlt[sql_database,deltalake]")
    p.add_argument("--skip-dlt", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, job files, tables)")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.changes > args.rows:
        p.error("--changes must not exceed --rows")
    from tests.services.postgres import start_postgres

    work = Path(tempfile.mkdtemp(prefix="copyjob-lakehouse-bench-"))
    server = start_postgres(work / "pg", settings=SETTINGS)
    report: dict[str, Any] = {"rows": args.rows, "changes": args.changes, "cpus": os.cpu_count(),
                              "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "results": []}
    try:
        report["results"] += copyjob_steps(server.url(), work, args.rows, args.changes)
        if not args.skip_dlt:
            report["results"] += dlt_steps(server.url(), work, args.rows, args.changes, args.dlt_python)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print("| tool | step | rows | seconds | rows/s | peak RSS MB | files written | equal |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in report["results"]:
        print(f"| {r['tool']} | {r['step']} | {r['rows']:,} | {r['seconds']} | {r['rows_per_s']:,} | "
              f"{r['peak_rss_mb']} | {r['files_written']} | {r['equal']} |")
    print(f"\nload average {report['load_average_at_start']} → {report['load_average_at_end']} on "
          f"{report['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--dlt-side"]:
        dlt_side(*sys.argv[2:6])
    else:
        raise SystemExit(main())
