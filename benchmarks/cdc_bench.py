"""Change data capture benchmark: PostgreSQL → PostgreSQL over the direct transport (capture feeds apply in
one process), on a throwaway PostgreSQL 15 (or ``--url`` of a server with wal_level = logical).

    .venv/bin/python -m benchmarks.cdc_bench [--rows 1000000] [--txn-rows 1000] [--updates 200000]
                                             [--rate 5000] [--seconds 20] [--url postgresql://…/postgres]

1. *transactions*: ``--rows`` inserts in ``--txn-rows``-row transactions are committed while no capture runs,
   then one ``copyjob run`` (merge) catches up: changes/s is the sustainable end-to-end rate (decode, fold,
   merge into the destination, confirm); CPU µs per change counts every thread of the copyjob process.
2. *single-row updates*: ``--updates`` transactions of one UPDATE each, caught up the same way.
3. *latency*: ``copyjob stream`` runs while the server commits single-row inserts at ``--rate`` per second for
   ``--seconds``; each row carries its source commit time (``clock_timestamp()``) and the destination row the
   time the merge inserted it (a column default): p50/p99 of the difference (one server, one clock).

Prints a markdown table and writes ``benchmarks/results/cdc.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.services.postgres import start_postgres

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cdc.json"
SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min"}
TABLE = ("CREATE TABLE bench (id bigint PRIMARY KEY, v int NOT NULL, note text, "
         "src_ts timestamptz DEFAULT clock_timestamp())")
GENERATE = """
CREATE PROCEDURE generate(total int, per_txn int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 0 .. total / per_txn - 1 LOOP
    INSERT INTO bench (id, v, note)
      SELECT g, g % 1000, 'note ' || g FROM generate_series(i * per_txn + 1, (i + 1) * per_txn) g;
    COMMIT;
  END LOOP;
END $$;
CREATE PROCEDURE update_each(total int, base int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. total LOOP
    UPDATE bench SET v = v + 1 WHERE id = base + (i % 100000);
    COMMIT;
  END LOOP;
END $$;
CREATE PROCEDURE paced(total int, rate int, first_id bigint) LANGUAGE plpgsql AS $$
DECLARE started timestamptz := clock_timestamp(); ahead float;
BEGIN
  FOR i IN 1 .. total LOOP
    INSERT INTO bench (id, v, note) VALUES (first_id + i, i % 1000, 'paced');
    COMMIT;
    IF i % 25 = 0 THEN
      ahead := i::float / rate - extract(epoch FROM clock_timestamp() - started);
      IF ahead > 0 THEN PERFORM pg_sleep(ahead); END IF;
    END IF;
  END LOOP;
END $$;
"""


def say(message: str) -> None:
    print(f"[cdc-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sql(url: str, *statements: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = None
        for statement in statements:
            cur = conn.execute(statement)
            row = cur.fetchone() if cur.description else None
        return row


def database(base: str, name: str) -> str:
    sql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name


def write_job(work: Path, job: str, src: str, dst: str) -> Path:
    path = work / f"{job}.yaml"
    path.write_text(f"job: {job}\nsource: {{url: \"{src}\"}}\ndestination: {{url: \"{dst}\"}}\n"
                    "copy: {mode: cdc, update_method: merge}\ntables:\n  - name: public.bench\n")
    return path


def run_once(job: Path) -> dict[str, Any]:
    """One ``copyjob run`` in this process: wall seconds, CPU seconds of every thread, rows written."""
    from copyjob.offsets import default_state_url, open_state_store

    from copyjob.loader import load_job
    from copyjob.progress import Progress
    from copyjob.runner import JobRun

    loaded = load_job(job)
    job_run = JobRun(loaded, lambda: open_state_store(default_state_url(loaded.path)), Progress(live=False))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        record = job_run.run()
    finally:
        job_run.close()
    seconds = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    table = record.tables[0]
    if table.status != "ok":
        raise RuntimeError(f"copyjob run failed: {table.error}")
    return {"seconds": seconds, "cpu_seconds": cpu, "rows_written": table.rows_written}


def same(src: str, dst: str) -> bool:
    query = "SELECT md5(string_agg(id::text || ':' || v, ',' ORDER BY id)), count(*) FROM bench"
    return bool(sql(src, query) == sql(dst, query))


def throughput(base: str, work: Path, name: str, prepare: str, changes: int) -> dict[str, Any]:
    src, dst = database(base, f"{name}_src"), database(base, f"{name}_dst")
    sql(src, TABLE, GENERATE)
    sql(src, "INSERT INTO bench (id, v) VALUES (0, 0)" if name != "updates" else "CALL generate(100000, 10000)")
    job = write_job(work, name, src, dst)
    run_once(job)  # snapshot, and the slot from which the changes below are read
    say(f"{name}: committing {changes:,} changes")
    started = time.perf_counter()
    sql(src, prepare)
    say(f"  source committed them in {time.perf_counter() - started:.1f}s; catching up")
    result = run_once(job)
    result.update(changes=changes, changes_per_s=changes / result["seconds"],
                  cpu_us_per_change=result["cpu_seconds"] / changes * 1e6, equal=same(src, dst))
    say(f"  {changes / result['seconds']:,.0f} changes/s, {result['cpu_us_per_change']:.1f} µs CPU per change, "
        f"destination equal: {result['equal']}")
    sql(base, f"SELECT pg_drop_replication_slot('copyjob_{name}')")
    return result


def latency(base: str, work: Path, rate: int, seconds: float) -> dict[str, Any]:
    src, dst = database(base, "latency_src"), database(base, "latency_dst")
    sql(src, TABLE, GENERATE, "INSERT INTO bench (id, v) VALUES (0, 0)")
    job = write_job(work, "latency", src, dst)
    run_once(job)
    sql(dst, "ALTER TABLE bench ADD COLUMN dst_ts timestamptz DEFAULT clock_timestamp()")
    log = (work / "stream.log").open("w")
    stream = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(job)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        time.sleep(3)
        total = int(rate * seconds)
        say(f"latency: {total:,} single-row transactions at {rate:,}/s while copyjob stream runs")
        started = time.perf_counter()
        sql(src, f"CALL paced({total}, {rate}, 10000000)")
        achieved = total / (time.perf_counter() - started)
        deadline = time.monotonic() + 120
        while sql(dst, "SELECT count(*) FROM bench WHERE note = 'paced'")[0] < total and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stream.send_signal(signal.SIGTERM)
        stream.wait(timeout=60)
        log.close()
    skip = int(rate * 2)  # the first two seconds: the stream warming up
    p50, p99, worst, n = sql(dst, f"""
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.99) WITHIN GROUP (ORDER BY d),
               max(d), count(*)
        FROM (SELECT extract(epoch FROM dst_ts - src_ts) AS d FROM bench
              WHERE note = 'paced' AND id > {10_000_000 + skip}) x""")
    result = {"rate_target": rate, "rate_achieved": achieved, "rows": n, "p50_s": p50, "p99_s": p99, "max_s": worst}
    say(f"  source rate {achieved:,.0f}/s; latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {worst * 1000:.0f} ms")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cdc_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--txn-rows", type=int, default=1_000)
    p.add_argument("--updates", type=int, default=200_000)
    p.add_argument("--rate", type=int, default=5_000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--url", default=None, help="a server to use instead of starting one (its postgres database)")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="copyjob-cdc-bench-"))
    server = None if args.url else start_postgres(tmp / "pg", settings=SETTINGS)
    base = args.url or (server.url() if server else "")
    report: dict[str, Any] = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                              "cpus": os.cpu_count()}
    try:
        report["transactions"] = throughput(base, tmp, "txns", f"CALL generate({args.rows}, {args.txn_rows})",
                                            args.rows)
        report["transactions"]["txn_rows"] = args.txn_rows
        report["single_row_updates"] = throughput(base, tmp, "updates", f"CALL update_each({args.updates}, 1)",
                                                  args.updates)
        report["latency"] = latency(base, tmp, args.rate, args.seconds)
    finally:
        if server is not None:
            server.stop()
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str))
    t, u, lat = report["transactions"], report["single_row_updates"], report["latency"]
    print("| scenario | changes | changes/s | CPU µs/change | result |\n|---|---:|---:|---:|---|")
    print(f"| {args.rows:,} inserts in {args.txn_rows:,}-row transactions | {t['changes']:,} | "
          f"{t['changes_per_s']:,.0f} | {t['cpu_us_per_change']:.1f} | equal: {t['equal']} |")
    print(f"| {args.updates:,} single-row updates | {u['changes']:,} | {u['changes_per_s']:,.0f} | "
          f"{u['cpu_us_per_change']:.1f} | equal: {u['equal']} |")
    print(f"| latency at {lat['rate_achieved']:,.0f}/s (target {args.rate:,}) | {lat['rows']:,} | - | - | "
          f"p50 {lat['p50_s'] * 1000:.0f} ms, p99 {lat['p99_s'] * 1000:.0f} ms |")
    print(f"\nload average {report['load_average_at_start']} → {report['load_average_at_end']} on "
          f"{report['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
