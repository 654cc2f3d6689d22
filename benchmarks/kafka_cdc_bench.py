"""Change capture through Kafka end to end: PostgreSQL → Kafka → PostgreSQL with ``mode: cdc`` + ``transport: kafka``.

    .venv/bin/python -m benchmarks.kafka_cdc_bench [--rows 1000000] [--txn-rows 1000] [--rate 5000]
                                                   [--seconds 20] [--format avro]
    .venv/bin/python -m benchmarks.run --kafka          (with kafka_bench.py, from the main benchmark script)

1. *transactions*: benchmarks/cdc_bench.py's workload (``--rows`` inserts in ``--txn-rows``-row transactions)
   committed while no capture runs, then one ``copyjob run`` catches up: capture (publish to Kafka) and apply
   (merge into PostgreSQL) side by side, the apply in a child process (copyjob.kafka_apply_process), and again
   with both in one process (``COPYJOB_KAFKA_CHILD=0``, the fallback). changes/s is the end-to-end rate, from
   process start to exit; peak RSS is that of the process and its children together, sampled every 0.2 s. The
   same workload through the direct transport (``copyjob run`` without Kafka, cdc_bench.py's line) is the
   reference, measured in the same run.
2. *latency*: ``copyjob stream`` runs while the server commits single-row inserts at ``--rate`` per second for
   ``--seconds``; each source row carries its commit time (``clock_timestamp()``) and the destination row the
   time the merge wrote it (a column default): p50/p99 of the difference, source commit → destination commit
   through the broker.

Writes ``benchmarks/results/kafka_cdc.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from benchmarks.cdc_bench import GENERATE, SETTINGS, TABLE, database, same, sql
from tests.services.kafka import start_kafka
from tests.services.postgres import start_postgres

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "kafka_cdc.json"


def say(message: str) -> None:
    print(f"[kafka-cdc-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


CDC_SETTINGS: dict[str, str] = {}
"""The job's ``cdc:`` settings (``--cdc-setting``), e.g. max_batch_delay."""


def write_job(work: Path, name: str, src: str, dst: str, bootstrap: str | None, fmt: str) -> Path:
    doc: dict[str, Any] = {"job": name, "source": {"url": src}, "destination": {"url": dst},
                           "copy": {"mode": "cdc", "update_method": "merge"}, "tables": [{"name": "public.bench"}]}
    if CDC_SETTINGS:
        doc["cdc"] = dict(CDC_SETTINGS)
    if bootstrap is not None:
        # a prefix of its own: a broker given with --bootstrap may hold an earlier run's topics
        prefix = f"{name}{os.getpid()}x{time.time_ns() % 10**9}"
        doc.update(transport="kafka", kafka={"bootstrap_servers": bootstrap, "topic_prefix": prefix, "format": fmt})
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def watch(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Peak RSS of a process and its children together while it runs, and the CPU seconds (user + system) of
    each, sampled every 0.2 s (a child that ends between listing and reading counts nothing). CPU seconds do
    not depend on what else the machine runs: the process's are the capture's critical path once the apply
    runs in a child."""
    peak: dict[str, Any] = {"rss_mb": 0.0, "cpu_s": {}}

    def rss(p: psutil.Process) -> int:
        try:
            with p.oneshot():
                times = p.cpu_times()
                peak["cpu_s"][p.pid] = times.user + times.system
                return int(p.memory_info().rss)
        except psutil.Error:
            return 0

    def sample() -> None:
        try:
            parent = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while proc.poll() is None:
            try:
                children = parent.children(recursive=True)
            except psutil.Error:
                children = []
            total = rss(parent) + sum(rss(c) for c in children)
            peak["rss_mb"] = max(peak["rss_mb"], total / 2**20)
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    return peak


def run_process(job: Path, timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``copyjob run`` in its own process: wall seconds (start to exit) and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "copyjob", "run", str(job), "--no-progress"], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    peak = watch(proc)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"copyjob run failed ({proc.returncode}): {(out + err).strip()[-2000:]}")
    cpu = peak["cpu_s"]
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak["rss_mb"]),
            "cpu_s": round(sum(cpu.values()), 1), "cpu_s_main_process": round(cpu.get(proc.pid, 0.0), 1)}


def throughput(base: str, work: Path, name: str, bootstrap: str | None, fmt: str, rows: int, txn_rows: int,
               timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    src, dst = database(base, f"{name}_src"), database(base, f"{name}_dst")
    sql(src, TABLE, GENERATE, "INSERT INTO bench (id, v) VALUES (0, 0)")
    job = write_job(work, name, src, dst, bootstrap, fmt)
    run_process(job, timeout_s)  # the snapshot, and the slot the changes below are read from
    say(f"{name}: committing {rows:,} inserts in {txn_rows:,}-row transactions")
    started = time.perf_counter()
    sql(src, f"CALL generate({rows}, {txn_rows})")
    committed = time.perf_counter() - started
    say(f"  source committed them in {committed:.1f}s; catching up with copyjob run")
    result = run_process(job, timeout_s, env)
    result.update(changes=rows, changes_per_s=round(rows / result["seconds"]), source_commit_s=round(committed, 2),
                  equal=same(src, dst))
    say(f"  {name}: {result}")
    slot = sql(base, f"SELECT slot_name FROM pg_replication_slots WHERE database = '{name}_src'")
    if slot:
        sql(base, f"SELECT pg_drop_replication_slot('{slot[0]}')")
    for db in (f"{name}_src", f"{name}_dst"):
        sql(base, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return result


def latency(base: str, work: Path, bootstrap: str, fmt: str, rate: int, seconds: float,
            synchronous_commit: str = "off") -> dict[str, Any]:
    src, dst = database(base, "klat_src"), database(base, "klat_dst")
    sql(src, TABLE, GENERATE, "INSERT INTO bench (id, v) VALUES (0, 0)")
    job = write_job(work, "klat", src, dst, bootstrap, fmt)
    run_process(job, 600)
    sql(dst, "ALTER TABLE bench ADD COLUMN dst_ts timestamptz DEFAULT clock_timestamp()")
    log = (work / "stream.log").open("w")
    stream = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(job)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    peak = watch(stream)  # type: ignore[arg-type]
    total = int(rate * seconds)
    try:
        # the stream is up once a marker row went through
        sql(src, "INSERT INTO bench (id, v, note) VALUES (-1, 0, 'marker')")
        deadline = time.monotonic() + 120
        while not sql(dst, "SELECT count(*) FROM bench WHERE id = -1")[0]:
            if time.monotonic() > deadline or stream.poll() is not None:
                raise RuntimeError(f"copyjob stream did not start: {(work / 'stream.log').read_text()[-2000:]}")
            time.sleep(0.2)
        say(f"latency: {total:,} single-row transactions at {rate:,}/s while copyjob stream runs")
        started = time.perf_counter()
        # off (the test servers' setting): a commit reaches the log's readers when the WAL writer flushes it,
        # every 200 ms (wal_writer_delay), which adds 0-200 ms to every change; on: at once, as by default
        sql(src, f"SET synchronous_commit = {synchronous_commit}", f"CALL paced({total}, {rate}, 10000000)")
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
    result = {"rate_target": rate, "rate_achieved": round(achieved), "source_synchronous_commit": synchronous_commit,
              "rows": n, "p50_s": round(float(p50), 3),
              "p99_s": round(float(p99), 3), "max_s": round(float(worst), 3),
              "stream_peak_rss_mb": round(peak["rss_mb"])}
    say(f"  latency: {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kafka_cdc_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--txn-rows", type=int, default=1_000)
    p.add_argument("--rate", type=int, default=5_000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--format", default="avro", choices=["avro", "json"])
    p.add_argument("--synchronous-commit", default="off", choices=["off", "on"],
                   help="the source's synchronous_commit while the latency line commits (off: the WAL writer "
                        "makes commits visible to the log every 200 ms)")
    p.add_argument("--skip-direct", action="store_true", help="leave out the direct-transport reference")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-one-process", action="store_true",
                   help="leave out the line with capture and apply in one process (COPYJOB_KAFKA_CHILD=0)")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--pg-url", default=None, help="a running server (wal_level = logical) instead of a new one")
    p.add_argument("--bootstrap", default=None, help="a running broker instead of a new one")
    p.add_argument("--cdc-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="a cdc: setting of the job files (repeatable), e.g. max_batch_delay=50ms")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    CDC_SETTINGS.update(setting.split("=", 1) for setting in args.cdc_setting)
    tmp = Path(tempfile.mkdtemp(prefix="copyjob-kafka-cdc-bench-"))
    report: dict[str, Any] = {"rows": args.rows, "txn_rows": args.txn_rows, "format": args.format,
                              "cdc_settings": CDC_SETTINGS,
                              "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    pg = broker = None
    try:
        pg = None if args.pg_url else start_postgres(tmp / "pg", settings=SETTINGS)
        broker = None if args.bootstrap else start_kafka(tmp / "kafka", heap="1g")
        base = args.pg_url or (pg.url() if pg else "")
        bootstrap = args.bootstrap or (broker.bootstrap if broker else "")
        report["kafka"] = throughput(base, tmp, "kcdc", bootstrap, args.format, args.rows, args.txn_rows,
                                     args.timeout, {"COPYJOB_KAFKA_CHILD": "1"})
        if not args.skip_one_process:
            report["kafka_one_process"] = throughput(base, tmp, "kone", bootstrap, args.format, args.rows,
                                                     args.txn_rows, args.timeout, {"COPYJOB_KAFKA_CHILD": "0"})
        if not args.skip_direct:
            report["direct"] = throughput(base, tmp, "dcdc", None, args.format, args.rows, args.txn_rows,
                                          args.timeout)
        if not args.skip_latency:
            report["latency"] = latency(base, tmp, bootstrap, args.format, args.rate, args.seconds,
                                        args.synchronous_commit)
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


def table(report: dict[str, Any]) -> str:
    d, lat = report.get("direct"), report.get("latency")
    lines = ["| line | changes/s | peak RSS MB | CPU s (main process) | ÷ direct | result |",
             "|---|---:|---:|---:|---:|---|"]
    text = f"{report['rows']:,} inserts in {report['txn_rows']:,}-row transactions"
    for key, how in (("kafka", "apply in a child process"), ("kafka_one_process", "one process")):
        k = report.get(key)
        if k:
            ratio = f"{k['changes_per_s'] / d['changes_per_s']:.2f}" if d else "-"
            lines.append(f"| {text}, through Kafka ({report['format']}, {how}) | {k['changes_per_s']:,} | "
                         f"{k['peak_rss_mb']} | {k['cpu_s']} ({k['cpu_s_main_process']}) | {ratio} | "
                         f"equal: {k['equal']} |")
    if d:
        lines.append(f"| {text}, direct | {d['changes_per_s']:,} | {d['peak_rss_mb']} | {d['cpu_s']} | 1 | "
                     f"equal: {d['equal']} |")
    if lat:
        lines.append(f"| latency at {lat['rate_achieved']:,}/s through Kafka | - | {lat['stream_peak_rss_mb']} | - | "
                     f"- | p50 {lat['p50_s'] * 1000:.0f} ms, p99 {lat['p99_s'] * 1000:.0f} ms |")
    lines.append(f"\nload average {report['load_average_at_start']} → {report['load_average_at_end']} on "
                 f"{report['cpus']} CPUs")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
