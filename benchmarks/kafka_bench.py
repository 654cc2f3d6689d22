"""Kafka benchmarks: PostgreSQL → Kafka → PostgreSQL through ``transport: kafka``.

    .venv/bin/python -m benchmarks.kafka_bench [--rows 1000000] [--updates 200000] [--rate 5000]
    .venv/bin/python -m benchmarks.run --kafka          (the same, from the main benchmark script)

1. snapshot, each side alone: ``copyjob capture`` of a ``--rows`` table (publish events/s: read, encode,
   produce, acknowledged), then ``copyjob apply --until-caught-up`` (apply events/s: consume, decode, fold,
   merge into PostgreSQL);
2. snapshot end to end: ``copyjob run`` of the same table under another job, topic prefix and destination
   database (publish + apply, merge): end-to-end events/s, peak RSS;
3. stream (on the end-to-end job): ``copyjob stream`` running while ``--updates`` rows are updated at
   ``--rate`` changes/s, each setting ``updated_at = clock_timestamp()``; a trigger in the destination stamps
   ``applied_at`` when the row is written, so latency = applied_at − updated_at per row (source commit →
   destination write, both on this machine's clock): p50/p99, and the stream process's peak RSS. The trigger
   is created after the snapshot phases: it is the probe's cost (about 0.9 s of server time a million rows).
Prints a JSON report on stdout (also written to ``benchmarks/results/kafka.json``); everything lives in a
temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.services.kafka import start_kafka
from tests.services.postgres import start_postgres

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "kafka.json"
KAFKA_CLI = "from copyjob.cli import main; main()"  # capture, apply, stream: registered by copyjob.cli


def say(message: str) -> None:
    print(f"[kafka-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def watch(proc: subprocess.Popen[str]) -> dict[str, float]:
    """Peak RSS of a process (and its children) while it runs, sampled every 0.2 s."""
    peak = {"rss_mb": 0.0}

    def sample() -> None:
        try:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak["rss_mb"] = max(peak["rss_mb"], rss / 2**20)
                time.sleep(0.2)
        except psutil.Error:
            pass

    threading.Thread(target=sample, daemon=True).start()
    return peak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kafka_bench")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--updates", type=int, default=200_000)
    p.add_argument("--rate", type=int, default=5_000, help="changes per second during the stream")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="copyjob-kafka-bench-"))
    pg = broker = None
    report: dict[str, Any] = {"rows": args.rows, "updates": args.updates, "rate": args.rate,
                              "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        pg = start_postgres(tmp / "pg", settings={"max_wal_size": "8GB"})
        broker = start_kafka(tmp / "kafka", heap="1g")
        src, dst = pg.create_database("ksrc"), pg.create_database("kdst")
        dst_split = pg.create_database("ksplit")
        say(f"generating {args.rows:,} rows")
        pg.psql("ksrc", f"""CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL,
            amount numeric(12,2), status text, updated_at timestamptz NOT NULL);
            INSERT INTO orders SELECT g, g % 1000, (g % 100000) / 100.0, 'new',
              '2026-01-01'::timestamptz + g * interval '1 us' FROM generate_series(1, {args.rows}) g;
            ANALYZE orders;""")
        for db in ("kdst", "ksplit"):
            pg.psql(db, """CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL,
            amount numeric(12,2), status text, updated_at timestamptz NOT NULL, applied_at timestamptz);""")

        def job_file(name: str, destination: str) -> Path:
            path = tmp / f"{name}.yaml"
            path.write_text(yaml.safe_dump({
                "job": name, "source": {"url": src}, "destination": {"url": destination},
                "copy": {"mode": "incremental", "update_method": "merge", "batch_rows": 50_000, "parallel": 1},
                "tables": [{"name": "public.orders", "target": "orders", "incremental_column": "updated_at"}],
                "transport": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": name}}))
            return path

        report["publish"] = timed(job_file("ksplit", dst_split), "capture", args.rows)
        say(f"publish: {report['publish']}")
        report["apply"] = timed(tmp / "ksplit.yaml", "apply", args.rows, "--until-caught-up")
        say(f"apply: {report['apply']}")
        job = job_file("kbench", dst)
        report["snapshot"] = snapshot(job, args.rows, pg)
        say(f"snapshot: {report['snapshot']}")
        # the latency probe: stamps each row as the destination writes it. Added only now, because a plpgsql
        # trigger per row costs the server about 0.9 s a million rows, which is the probe's cost, not copyjob's
        pg.psql("kdst", """CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS
              $$ BEGIN NEW.applied_at := clock_timestamp(); RETURN NEW; END $$;
            CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION stamp();""")
        report["stream"] = stream(job, pg, args.updates, args.rate)
        say(f"stream: {report['stream']}")
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def timed(job: Path, command: str, rows: int, *extra: str) -> dict[str, Any]:
    """One side of the pipeline alone: ``copyjob capture`` or ``copyjob apply``."""
    say(f"copyjob {command} ({rows:,} rows)")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", KAFKA_CLI, command, str(job), *extra], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = watch(proc)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"copyjob {command} failed: {out}{err}")
    return {"seconds": round(seconds, 2), "events_per_s": round(rows / seconds), "peak_rss_mb": round(peak["rss_mb"])}


def snapshot(job: Path, rows: int, pg: Any) -> dict[str, Any]:
    say("snapshot: copyjob run (publish + apply)")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "copyjob", "run", str(job), "--no-progress"], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = watch(proc)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"copyjob run failed: {out}{err}")
    count = int(pg.psql("kdst", "SELECT count(*) FROM orders"))
    return {"seconds": round(seconds, 2), "events_per_s": round(rows / seconds), "rows_in_destination": count,
            "peak_rss_mb": round(peak["rss_mb"])}


def stream(job: Path, pg: Any, updates: int, rate: int) -> dict[str, Any]:
    import psycopg

    say(f"stream: {updates:,} updates at {rate:,}/s")
    proc = subprocess.Popen([sys.executable, "-c", KAFKA_CLI, "stream", str(job), "--poll-interval", "0.1"],
                            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = watch(proc)
    time.sleep(5)  # the first pass finds nothing new
    per_tick = max(1, int(rate * 0.1))
    started = time.monotonic()
    with psycopg.connect(pg.url("ksrc"), autocommit=True) as conn:
        done = 0
        while done < updates:
            n = min(per_tick, updates - done)
            conn.execute("UPDATE orders SET status = 'upd', updated_at = clock_timestamp() "
                         "WHERE id > %s AND id <= %s", (done, done + n))
            done += n
            delay = started + (done / rate) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    achieved = updates / (time.monotonic() - started)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if int(pg.psql("kdst", "SELECT count(*) FROM orders WHERE status = 'upd'")) >= updates:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    src = dict(_rows(pg, "ksrc", "SELECT id, extract(epoch FROM updated_at) FROM orders WHERE status = 'upd'"))
    dst = _rows(pg, "kdst", "SELECT id, extract(epoch FROM applied_at) FROM orders WHERE status = 'upd'")
    latencies = sorted(float(a) - float(src[i]) for i, a in dst if i in src)
    if not latencies:
        raise RuntimeError(f"no update arrived: {out}{err}")
    q = statistics.quantiles(latencies, n=100)
    return {"updates": updates, "achieved_rate": round(achieved), "arrived": len(latencies),
            "p50_s": round(q[49], 3), "p99_s": round(q[98], 3), "max_s": round(latencies[-1], 3),
            "stream_peak_rss_mb": round(peak["rss_mb"]), "exit_code": proc.returncode}


def _rows(pg: Any, db: str, sql: str) -> list[tuple[int, str]]:
    import psycopg

    with psycopg.connect(pg.url(db)) as conn:
        return [(int(i), str(v)) for i, v in conn.execute(sql).fetchall()]


if __name__ == "__main__":
    sys.exit(main())
