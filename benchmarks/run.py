"""``make bench``: copyjob against the raw psql pipe, dlt and sling on one throwaway PostgreSQL 15.

    .venv/bin/python -m benchmarks.run [--rows N] [--big-rows N | --skip-big] [--skip-dlt] [--skip-sling] ...

Prints progress on stderr and the markdown report on stdout; writes the report as JSON (and markdown) to
``benchmarks/results/``. Everything runs in one temporary folder (the server's data, job files, logs), which
is removed at the end, and the server is stopped, also when a step fails or the run is interrupted.
See benchmarks/README.md for what each line means.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from benchmarks import pgdata, scenarios
from benchmarks.report import markdown, write_json
from benchmarks.results import Result, failed
from tests.services.postgres import start_postgres

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# the same for every tool: fewer forced checkpoints during multi-GB loads
SERVER_SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min"}
BUSY_LOAD = 0.7  # 1-minute load average above which the report warns that other work competes for the CPU
PIP_PACKAGES = {"dlt": ["dlt[postgres,sql_database]"], "sling": ["sling-linux-amd64"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in public.orders for the main comparison")
    p.add_argument("--big-rows", type=int, default=5_000_000, help="rows for the memory-bound copy")
    p.add_argument("--skip-big", action="store_true", help="skip the memory-bound copy")
    p.add_argument("--skip-dlt", action="store_true", help="do not run dlt")
    p.add_argument("--skip-sling", action="store_true", help="do not run sling")
    p.add_argument("--skip-decoded", action="store_true", help="skip copyjob's decoded (Arrow) path")
    p.add_argument("--repeat", type=int, default=3, help="runs of each measured copy (the median is reported)")
    p.add_argument("--incremental-tables", type=int, default=50, help="tables in the no-op incremental run")
    p.add_argument("--incremental-rows", type=int, default=1_000, help="rows per table in that run")
    p.add_argument("--no-install", action="store_true", help="do not pip install dlt / sling when missing")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a measured command is killed")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where to make the temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, job files)")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json", help="the JSON report")
    p.add_argument("--kafka", action="store_true", help="run only the Kafka benchmarks (benchmarks/kafka_bench.py, "
                   "then benchmarks/kafka_cdc_bench.py)")
    p.add_argument("--cdc", action="store_true", help="run only the PostgreSQL CDC benchmarks "
                   "(benchmarks/cdc_bench.py: changes/s, latency)")
    p.add_argument("--debezium", action="store_true", help="run only the Debezium comparison "
                   "(benchmarks/debezium_bench.py: changes/s into Kafka, copyjob vs Debezium)")
    p.add_argument("--verify", action="store_true", help="run only the copyjob verify benchmark "
                   "(benchmarks/verify_bench.py: verify vs a full copy, find and repair changed rows, reladiff)")
    p.add_argument("--verify-rows", type=int, default=10_000_000, help="rows for --verify")
    p.add_argument("--lakehouse", action="store_true", help="run only the lakehouse benchmark "
                   "(benchmarks/lakehouse_bench.py: PostgreSQL → Delta Lake, full copy and CDC merges, vs dlt)")
    p.add_argument("--changes", type=int, default=100_000, help="CDC changes for --lakehouse")
    p.add_argument("--dlt-python", default=sys.executable, help="--lakehouse: a Python with "
                   "dlt[deltalake] and sqlalchemy (default: this one)")
    args = p.parse_args(argv)
    if min(args.rows, args.big_rows, args.incremental_tables, args.incremental_rows, args.repeat) < 1:
        p.error("row, table and repeat counts must be positive")
    return args


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_installed(tool: str, module: str, allowed: bool) -> str | None:
    """Install ``tool``'s packages into this venv when ``module`` is missing; the error text if that fails."""
    needed = [module] + (["psycopg2"] if tool == "dlt" else [])
    if all(importlib.util.find_spec(m) is not None for m in needed):
        return None
    if not allowed:
        return f"{tool} is not installed (and --no-install was given)"
    say(f"installing {' '.join(PIP_PACKAGES[tool])} into {sys.prefix}")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *PIP_PACKAGES[tool]],
                          capture_output=True, text=True)
    importlib.invalidate_caches()
    if done.returncode != 0:
        return f"pip install {' '.join(PIP_PACKAGES[tool])} failed: {done.stderr.strip()[-500:]}"
    return None


def guarded(label: str, key: str, rows: int, step: Callable[[], list[Result]], logs: Path) -> list[Result]:
    """Run one scenario; an unexpected error becomes a failed line (the traceback goes to the logs)."""
    say(f"{label} …")
    started = time.perf_counter()
    try:
        results = step()
    except Exception as exc:
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{key}.traceback").write_text(traceback.format_exc())
        results = [failed(key, label, rows, f"{type(exc).__name__}: {exc}")]
    for r in results:
        shown = f"{r.seconds:.2f}s, {r.peak_rss_mb:.0f} MB" if r.seconds is not None and r.peak_rss_mb else "-"
        say(f"  {r.label}: {shown} {r.check}" + (f" ERROR {r.error}" if r.error else ""))
    say(f"  ({time.perf_counter() - started:.1f}s)")
    return results


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for dist in ("copyjob", "dlt", "sling-linux-amd64", "pyarrow", "psycopg"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def _one(run: Callable[[scenarios.Bench, str, pgdata.TableFacts], Result], bench: scenarios.Bench,
         source_url: str, source: pgdata.TableFacts) -> list[Result]:
    return [run(bench, source_url, source)]


def run_all(args: argparse.Namespace, bench: scenarios.Bench, install_errors: dict[str, str | None],
            meta: dict[str, Any]) -> list[Result]:
    results: list[Result] = []
    logs = bench.logs
    say(f"generating public.orders: {args.rows:,} rows")
    source_url, source, seconds = scenarios.prepare_source(bench, "src", args.rows)
    meta["source_generation_seconds"] = round(seconds, 3)
    say(f"  {seconds:.1f}s; fingerprint {source.fingerprint}")

    results += guarded("raw pipe", "raw_pipe", args.rows, lambda: scenarios.raw_pipe(bench, "src", source), logs)
    results += guarded("copyjob full copy", "copyjob_full", args.rows, lambda: [scenarios.copyjob_full(
        bench, source_url, source, key="copyjob_full", label="copyjob full copy (binary pass-through, creates PK)",
        dest_db="copyjob_dst")], logs)
    if not args.skip_decoded:
        results += guarded("copyjob decoded path", "copyjob_decoded", args.rows,
                           lambda: [scenarios.copyjob_decoded(bench, source_url, source)], logs)
    for tool, run in (("dlt", scenarios.dlt_copy), ("sling", scenarios.sling_copy)):
        if getattr(args, f"skip_{tool}"):
            continue
        error = install_errors.get(tool)
        if error:
            results.append(failed(tool, f"{tool} (not run)", args.rows, error))
            continue
        results += guarded(tool, tool, args.rows, functools.partial(_one, run, bench, source_url, source), logs)
    bench.drop_database("src")  # frees its disk and cache before the big copy
    if not args.skip_big:
        results += guarded(f"copyjob memory bound ({args.big_rows:,} rows)", "copyjob_big", args.big_rows,
                           lambda: scenarios.copyjob_big(bench, args.big_rows), logs)
    results += guarded("no-op incremental", "incremental_noop", 0, lambda: scenarios.noop_incremental(
        bench, args.incremental_tables, args.incremental_rows), logs)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.kafka:  # PostgreSQL → Kafka → PostgreSQL: snapshot events/s, stream latency; then change capture
        from benchmarks import kafka_bench, kafka_cdc_bench

        return kafka_bench.main(["--rows", str(args.rows)]) or kafka_cdc_bench.main(["--rows", str(args.rows)])
    if args.cdc:  # PostgreSQL → PostgreSQL change capture, direct: changes/s, latency
        from benchmarks import cdc_bench

        return cdc_bench.main([])
    if args.debezium:  # PostgreSQL → Kafka change capture: Debezium's connector vs copyjob, same workload
        from benchmarks import debezium_bench

        return debezium_bench.main([])
    if args.lakehouse:  # PostgreSQL → Delta Lake: full copy and CDC merges, against dlt's Delta tables
        from benchmarks import lakehouse_bench

        return lakehouse_bench.main(["--rows", str(args.rows), "--changes", str(args.changes),
                                     "--dlt-python", args.dlt_python])
    if args.verify:  # copyjob verify: PostgreSQL → PostgreSQL and → DuckDB, against a full copy and the anchors
        from benchmarks import verify_bench

        return verify_bench.main(["--rows", str(args.verify_rows)])
    started = time.perf_counter()
    meta: dict[str, Any] = {"started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                            "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    install_errors = {
        tool: ensure_installed(tool, module, not args.no_install)
        for tool, module, skip in (("dlt", "dlt", args.skip_dlt), ("sling", "sling_linux_amd64", args.skip_sling))
        if not skip
    }
    meta["versions"] = versions()
    meta["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if meta["load_average_at_start"][0] > BUSY_LOAD:
        say(f"warning: the machine is busy (load average {meta['load_average_at_start'][0]:.2f}): other processes "
            "compete for the CPU and the numbers will be noisy")
    tmp = Path(tempfile.mkdtemp(prefix="copyjob-bench-", dir=args.tmp_dir))
    say(f"working in {tmp}")
    server = None
    try:
        server = start_postgres(tmp / "pg", settings=SERVER_SETTINGS)
        bench = scenarios.Bench(server=server, work=tmp / "work", timeout_s=args.timeout, repeat=args.repeat)
        bench.work.mkdir(parents=True)
        meta["postgres_version"] = pgdata.scalar(server.url(), "SHOW server_version")
        say(f"PostgreSQL {meta['postgres_version']} on port {server.port}")
        results = run_all(args, bench, install_errors, meta)
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    meta["total_seconds"] = round(time.perf_counter() - started, 1)
    meta["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report = markdown(results, meta)
    write_json(args.output, results, meta)
    args.output.with_suffix(".md").write_text(report)
    say(f"done in {meta['total_seconds']:.0f}s; wrote {args.output}")
    print(report)
    # not a test: missed targets and failing competitors do not fail `make bench`; a broken copyjob run does
    return 0 if all(r.ok for r in results if r.key.startswith(("copyjob", "incremental"))) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the server is stopped and the temporary folder removed by then
        say("interrupted")
        sys.exit(130)
