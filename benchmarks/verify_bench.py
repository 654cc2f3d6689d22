"""``copyjob verify`` benchmark: PostgreSQL → PostgreSQL and PostgreSQL → DuckDB on a throwaway PostgreSQL 15.

    .venv/bin/python -m benchmarks.verify_bench [--rows 10000000] [--changes 100] [--skip-anchors]
    .venv/bin/python -m benchmarks.run --verify [--verify-rows N]

For each destination, in one run:
1. *copy*: ``copyjob run`` copies the orders table (``--rows`` rows) in full: the time to beat;
2. *verify equal*: ``copyjob verify`` of the identical tables (goal: at least 3× faster than the copy, peak
   memory under 300 MB);
3. ``--changes`` rows are changed behind copyjob's back in the destination (60% updated, 20% deleted, 20%
   added); *verify, find* reports them; *verify --repair* re-copies exactly them and checks them again;
4. the anchors on the same changed tables, when they install (``pip install reladiff data-diff`` into their
   own virtual environments; ``--anchor-python`` points at them): ``reladiff`` and ``data-diff``, which do the
   same hash-and-bisect across databases.

Wall times on a shared machine depend on what else runs; each measurement also records the CPU seconds it cost
(the copyjob process plus the PostgreSQL backends, reaped into the postmaster's children times) and the load
average, so ``cpu_speedup_vs_copy`` compares the work done whatever the load.

Prints a markdown table and writes ``benchmarks/results/verify.json``.
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
from typing import Any

from benchmarks import pgdata
from benchmarks.measure import Measurement, run_measured
from tests.services.postgres import start_postgres

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "verify.json"
SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min"}
COLUMNS = ["customer_id", "name", "amount", "status", "created_at", "updated_at"]
ANCHORS = {"reladiff": [Path("/tmp/anchor-reladiff/bin/reladiff")],
           # its command line needs dbt-core installed: the library, through a small runner
           "data-diff": [Path("/tmp/anchor-datadiff/bin/python"), ROOT / "benchmarks" / "data_diff_api.py"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.verify_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--changes", type=int, default=100)
    p.add_argument("--skip-anchors", action="store_true")
    p.add_argument("--skip-duckdb", action="store_true")
    p.add_argument("--skip-postgresql", action="store_true", help="only PostgreSQL → DuckDB")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--output", type=Path, default=RESULTS)
    return p.parse_args(argv)


def say(message: str) -> None:
    print(f"[verify-bench] {message}", file=sys.stderr, flush=True)


def job_yaml(path: Path, source: str, destination: str) -> Path:
    path.write_text(json.dumps({
        "job": "verify_bench", "source": {"url": source}, "destination": {"url": destination},
        "copy": {"mode": "full", "update_method": "merge"}, "tables": [{"name": "orders"}]}))
    return path


def change_destination(kind: str, url: str, rows: int, changes: int) -> None:
    """``changes`` rows changed behind copyjob's back: updated, deleted and added."""
    updates, deletes = changes * 6 // 10, changes * 2 // 10
    adds = changes - updates - deletes
    step = max(1, rows // changes)
    ids = [1 + i * step for i in range(updates + deletes)]
    statements = [f"UPDATE orders SET status = 'changed behind our back' WHERE id = {i}" for i in ids[:updates]]
    statements += [f"DELETE FROM orders WHERE id = {i}" for i in ids[updates:]]
    statements += [f"INSERT INTO orders (id, status) VALUES ({rows + 1 + i}, 'added')" for i in range(adds)]
    if kind == "postgresql":
        pgdata.exec_sql(url, *statements)
    else:
        import duckdb

        con = duckdb.connect(url.removeprefix("duckdb:///"))
        for s in statements:
            con.execute(s)
        con.close()


class ServerCpu:
    """CPU seconds the PostgreSQL server has used so far: the postmaster and the backends it reaped."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._process = psutil.Process(pid)

    def __call__(self) -> float:
        t = self._process.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)


SERVER_CPU: ServerCpu | None = None
CPU: dict[str, float] = {}
"""Per measurement name: CPU seconds of copyjob plus the PostgreSQL server."""


def measured(name: str, command: list[str], logs: Path, timeout: float) -> Measurement:
    say(f"{name}: {' '.join(command[:4])} …")
    before = SERVER_CPU() if SERVER_CPU else 0.0
    m = run_measured(command, log_dir=logs, name=name, cwd=ROOT, timeout_s=timeout)
    time.sleep(0.5)  # the backends of the command's connections are reaped
    server = (SERVER_CPU() - before) if SERVER_CPU else 0.0
    CPU[name] = m.cpu_seconds + server
    say(f"{name}: {m.seconds:.1f}s, cpu {m.cpu_seconds:.1f}s + server {server:.1f}s, peak {m.peak_rss_mb:.0f} MB, "
        f"exit {m.returncode}, load {os.getloadavg()[0]:.1f}")
    return m


def copyjob(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "copyjob", *map(str, args)]


def found(m: Measurement) -> dict[str, Any]:
    try:
        table = json.loads(m.stdout())["tables"][0]
    except (ValueError, KeyError, IndexError):
        return {}
    return {k: table[k] for k in ("result", "missing_count", "extra_count", "different_count", "repaired",
                                   "ranges") if k in table}


def anchor(tool: str, source: str, destination: str, logs: Path, timeout: float) -> dict[str, Any]:
    command = ANCHORS[tool]
    if not command[0].exists():
        return {"error": f"{command[0]} not installed"}
    columns = [arg for c in COLUMNS for arg in ("-c", c)]
    m = measured(f"{tool}-{destination.split(':')[0]}",
                 [*map(str, command), source, "orders", destination, "orders", "-k", "id", *columns], logs, timeout)
    diff_lines = [line for line in m.stdout().splitlines() if line[:1] in "+-"]
    broken = m.returncode not in (0, 1) or (not diff_lines and "Traceback" in m.stderr())
    return {"seconds": round(m.seconds, 2), "peak_rss_mb": round(m.peak_rss_mb), "exit": m.returncode,
            "diff_lines": len(diff_lines), **({"error": m.error_text()} if broken else {})}


def one_destination(kind: str, source: str, destination: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    logs = work / "logs"
    job = job_yaml(work / f"{kind}.json", source, destination)
    copy = measured(f"copy-{kind}", copyjob("run", job, "--no-progress"), logs, args.timeout)
    equal = measured(f"verify-equal-{kind}", copyjob("verify", job, "--json"), logs, args.timeout)
    change_destination(kind, destination, args.rows, args.changes)
    find = measured(f"verify-find-{kind}", copyjob("verify", job, "--json"), logs, args.timeout)
    repair = measured(f"verify-repair-{kind}", copyjob("verify", job, "--json", "--repair"), logs, args.timeout)
    after = measured(f"verify-after-{kind}", copyjob("verify", job, "--json"), logs, args.timeout)
    out: dict[str, Any] = {
        "destination": kind, "rows": args.rows, "changes": args.changes,
        "copy_s": round(copy.seconds, 2), "copy_peak_mb": round(copy.peak_rss_mb),
        "verify_equal_s": round(equal.seconds, 2), "verify_equal_peak_mb": round(equal.peak_rss_mb),
        "verify_equal_exit": equal.returncode,
        "speedup_vs_copy": round(copy.seconds / equal.seconds, 2) if equal.seconds else None,
        "copy_cpu_s": round(CPU[f"copy-{kind}"], 2), "verify_equal_cpu_s": round(CPU[f"verify-equal-{kind}"], 2),
        "cpu_speedup_vs_copy": round(CPU[f"copy-{kind}"] / CPU[f"verify-equal-{kind}"], 2)
        if CPU[f"verify-equal-{kind}"] else None,
        "load_average": round(os.getloadavg()[0], 1),
        "find_s": round(find.seconds, 2), "find_peak_mb": round(find.peak_rss_mb), "find": found(find),
        "repair_s": round(repair.seconds, 2), "repair": found(repair),
        "after_repair": found(after), "after_repair_exit": after.returncode,
    }
    if not args.skip_anchors:
        # the anchors compare the changed tables again: repair undid the changes, so change other rows
        change_destination(kind, destination, args.rows, args.changes)
        again = measured(f"verify-find2-{kind}", copyjob("verify", job, "--json"), logs, args.timeout)
        out["find_again_s"] = round(again.seconds, 2)
        anchor_dest = destination if kind == "postgresql" else destination.replace("duckdb:///", "duckdb://")
        out["anchors"] = {tool: anchor(tool, source, anchor_dest, logs, args.timeout) for tool in ANCHORS}
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| destination | rows | copy | verify (equal) | × faster | CPU copy / verify | × less CPU | peak MB | "
             "find 100 | repair | reladiff | data-diff | load |", "|" + "---|" * 13]
    for r in results:
        anchors = r.get("anchors", {})

        def a(tool: str, anchors: dict[str, Any] = anchors) -> str:
            x = anchors.get(tool, {})
            return f"{x['seconds']}s ({x['diff_lines']} lines)" if "seconds" in x and "error" not in x else \
                "n/a" if not x else "failed"
        lines.append(f"| {r['destination']} | {r['rows']:,} | {r['copy_s']}s | {r['verify_equal_s']}s | "
                     f"{r['speedup_vs_copy']} | {r['copy_cpu_s']}s / {r['verify_equal_cpu_s']}s | "
                     f"{r['cpu_speedup_vs_copy']} | {r['verify_equal_peak_mb']} | {r['find_s']}s | {r['repair_s']}s | "
                     f"{a('reladiff')} | {a('data-diff')} | {r['load_average']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="copyjob-verify-bench-"))
    server = None
    results: list[dict[str, Any]] = []
    try:
        server = start_postgres(tmp / "pg", settings=SETTINGS)
        global SERVER_CPU
        SERVER_CPU = ServerCpu(server.process.pid)
        source = server.create_database("src")
        say(f"filling {args.rows:,} rows")
        started = time.perf_counter()
        pgdata.create_orders(source, args.rows, table="public.orders")
        say(f"filled in {time.perf_counter() - started:.0f}s")
        if not args.skip_postgresql:
            results.append(one_destination("postgresql", source, server.create_database("dst"), tmp, args))
        if not args.skip_duckdb:
            results.append(one_destination("duckdb", source, f"duckdb:///{tmp / 'dst.duckdb'}", tmp, args))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0 if all(r["verify_equal_exit"] == 0 and r["after_repair_exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
