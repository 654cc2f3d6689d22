"""The benchmark's scenarios. Each one copies into a fresh database, measures the copy as a subprocess, checks
the destination against the source and returns :class:`~benchmarks.results.Result` lines.

Every measured step starts with a ``CHECKPOINT``, so that the dirty pages of an earlier step are not
written out during the next one, and every destination database is dropped once checked.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import pgdata
from benchmarks.measure import Measurement, run_measured
from benchmarks.results import Result
from tests.services.postgres import PASSWORD, PG_BIN, SUPERUSER, PostgresServer

VENV_BIN = Path(sys.executable).parent  # .venv/bin when run as `.venv/bin/python -m benchmarks.run`
REPO = Path(__file__).resolve().parent.parent
ORDERS = "public.orders"


@dataclass
class Bench:
    """What every scenario shares: the server, a work folder (job files, logs) and the timeout."""

    server: PostgresServer
    work: Path
    timeout_s: float
    databases: list[str] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def new_database(self, name: str) -> str:
        self.server.create_database(name)
        self.databases.append(name)
        return self.server.url(name)

    def drop_database(self, name: str) -> None:
        self.server.psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.databases:
            self.databases.remove(name)

    def checkpoint(self) -> None:
        self.server.psql("postgres", "CHECKPOINT")

    def measure(self, name: str, command: list[str], env: dict[str, str] | None = None,
                cwd: Path | None = None) -> Measurement:
        self.checkpoint()
        return run_measured(command, log_dir=self.logs, name=name, env={**os.environ, **(env or {})},
                            cwd=cwd or self.work, timeout_s=self.timeout_s)

    def psql_command(self, database: str, sql: str) -> list[str]:
        return [str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                "-p", str(self.server.port), "-U", SUPERUSER, "-d", database, "-c", sql]


def _result(key: str, label: str, rows: int, m: Measurement, verdict: pgdata.Verdict | None = None,
            per_row: bool = True) -> Result:
    result = Result(key=key, label=label, rows=rows, seconds=m.seconds, peak_rss_mb=m.peak_rss_mb,
                    cpu_seconds=m.cpu_seconds, per_row=per_row)
    if not m.ok:
        result.error = m.error_text()
        result.check = "error"
        return result
    if verdict is not None:
        result.ok = verdict.ok
        result.check = verdict.summary
        result.notes.extend(verdict.notes)
        if verdict.problems:
            result.error = "; ".join(verdict.problems)
    else:
        result.ok = True
    return result


# ---------------------------------------------------------------- source


def prepare_source(bench: Bench, database: str, rows: int) -> tuple[str, pgdata.TableFacts, float]:
    """A database with ``public.orders`` of ``rows`` rows; returns its URL, its facts and the seconds it took."""
    import time

    url = bench.new_database(database)
    started = time.perf_counter()
    pgdata.create_orders(url, rows)
    seconds = time.perf_counter() - started
    return url, pgdata.table_facts(url), seconds


# ---------------------------------------------------------------- raw pipe


def raw_pipe(bench: Bench, source_db: str, source: pgdata.TableFacts) -> list[Result]:
    """psql binary COPY out | psql binary COPY in, into a pre-created table without a key; then the key."""
    dest_db = "raw_dst"
    dest_url = bench.new_database(dest_db)
    pgdata.exec_sql(dest_url, pgdata.orders_ddl(primary_key=False))
    out = bench.psql_command(source_db, f"COPY {ORDERS} TO STDOUT (FORMAT binary)")
    into = bench.psql_command(dest_db, f"COPY {ORDERS} FROM STDIN (FORMAT binary)")
    pipeline = f"set -o pipefail; {shlex.join(out)} | {shlex.join(into)}"
    env = {"PGPASSWORD": PASSWORD}
    try:
        copy = bench.measure("raw_pipe", ["bash", "-c", pipeline], env)
        copied = pgdata.table_facts(dest_url) if copy.ok else None
        copy_result = _result("raw_pipe", "raw pipe: psql COPY binary → psql COPY binary (no PK)", source.rows,
                              copy, pgdata.compare(source, copied, expect_types=None, expect_pk=False)
                              if copied else None)
        if not copy.ok:
            return [copy_result]
        key = bench.measure("raw_pipe_pk", bench.psql_command(dest_db, f"ALTER TABLE {ORDERS} ADD PRIMARY KEY (id)"),
                            env)
        with_key = _result("raw_pipe_pk", "raw pipe + ADD PRIMARY KEY", source.rows, key)
        if key.ok:
            with_key.seconds = copy.seconds + key.seconds
            with_key.peak_rss_mb = max(copy.peak_rss_mb, key.peak_rss_mb)
            with_key.cpu_seconds = copy.cpu_seconds + key.cpu_seconds
            with_key.details = {"copy_seconds": round(copy.seconds, 3), "primary_key_seconds": round(key.seconds, 3)}
            verdict = pgdata.compare(source, pgdata.table_facts(dest_url, fingerprint=False), expect_types=None,
                                     expect_pk=True)
            with_key.ok, with_key.check = verdict.ok, verdict.summary
            with_key.notes.append(f"COPY {copy.seconds:.2f}s + primary key {key.seconds:.2f}s")
        return [copy_result, with_key]
    finally:
        bench.drop_database(dest_db)


# ---------------------------------------------------------------- copyjob


def _yaml(value: Any) -> str:
    return json.dumps(value)  # a JSON scalar is a YAML scalar


def write_job(path: Path, name: str, source_url: str, dest_url: str, tables: list[dict[str, Any]],
              copy: dict[str, Any]) -> Path:
    lines = [f"job: {name}", f"source: {{url: {_yaml(source_url)}}}", f"destination: {{url: {_yaml(dest_url)}}}",
             "copy:"]
    lines += [f"  {k}: {_yaml(v)}" for k, v in copy.items()]
    lines.append("tables:")
    for table in tables:
        first = True
        for k, v in table.items():
            lines.append(f"  {'- ' if first else '  '}{k}: {_yaml(v)}")
            first = False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def copyjob_history(job_file: Path) -> dict[str, Any] | None:
    """The last run as ``copyjob history --json`` reports it (None if that fails)."""
    done = subprocess.run([str(VENV_BIN / "copyjob"), "history", str(job_file), "--json", "--limit", "1"],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return None
    runs = json.loads(done.stdout)
    return runs[0] if runs else None


def _copyjob_command(job_file: Path) -> list[str]:
    return [str(VENV_BIN / "copyjob"), "run", str(job_file), "--no-progress"]


def _attach_history(result: Result, job_file: Path) -> dict[str, Any] | None:
    run = copyjob_history(job_file)
    if run is not None:
        tables = run.get("tables", [])
        result.details["copyjob_tables"] = tables
        if len(tables) == 1:
            t = tables[0]
            result.notes.append(f"copyjob: {t['mode']}, {t['rows_written']:,} rows written in {t['duration_s']:.2f}s")
    return run


def copyjob_full(bench: Bench, source_url: str, source: pgdata.TableFacts, *, key: str, label: str,
                 dest_db: str) -> Result:
    """copyjob full copy into a fresh database: it creates the table (same types) and adds the key after."""
    dest_url = bench.new_database(dest_db)
    try:
        job = write_job(bench.work / key / "job.yaml", f"bench-{key}", source_url, dest_url,
                        [{"name": ORDERS}], {"mode": "full", "update_method": "append", "create_tables": True})
        m = bench.measure(key, _copyjob_command(job), cwd=job.parent)
        verdict = pgdata.compare(source, pgdata.table_facts(dest_url), expect_types=None, expect_pk=True) \
            if m.ok else None
        result = _result(key, label, source.rows, m, verdict)
        _attach_history(result, job)
        return result
    finally:
        bench.drop_database(dest_db)


DECODED_OVERRIDES = {"customer_id": "bigint", "amount": "numeric(14,2)"}


def copyjob_decoded(bench: Bench, source_url: str, source: pgdata.TableFacts) -> Result:
    """copyjob into an existing table whose types differ (bigint, numeric(14,2)): no binary pass-through,
    rows are decoded into Arrow batches and encoded again. The table has no key, like the raw pipe's."""
    key, dest_db = "copyjob_decoded", "copyjob_decoded_dst"
    dest_url = bench.new_database(dest_db)
    try:
        pgdata.exec_sql(dest_url, pgdata.orders_ddl(primary_key=False, overrides=DECODED_OVERRIDES))
        expected_types = pgdata.table_facts(dest_url, fingerprint=False).types
        job = write_job(bench.work / key / "job.yaml", f"bench-{key}", source_url, dest_url,
                        [{"name": ORDERS}], {"mode": "full", "update_method": "append", "create_tables": True})
        m = bench.measure(key, _copyjob_command(job), cwd=job.parent)
        verdict = pgdata.compare(source, pgdata.table_facts(dest_url), expect_types=expected_types,
                                 expect_pk=False) if m.ok else None
        result = _result(key, "copyjob decoded path (dest types differ → Arrow)", source.rows, m, verdict)
        result.notes.append("destination pre-created with " +
                            ", ".join(f"{c} {t}" for c, t in DECODED_OVERRIDES.items()))
        _attach_history(result, job)
        return result
    finally:
        bench.drop_database(dest_db)


def copyjob_big(bench: Bench, rows: int) -> list[Result]:
    """The memory bound: a full copy of a ``rows``-row table (its own source database)."""
    source_url, source, seconds = prepare_source(bench, "big_src", rows)
    try:
        result = copyjob_full(bench, source_url, source, key="copyjob_big",
                              label=f"copyjob full copy, {rows:,} rows (memory bound)", dest_db="big_dst")
        result.details["source_generation_seconds"] = round(seconds, 3)
        return [result]
    finally:
        bench.drop_database("big_src")


def noop_incremental(bench: Bench, tables: int, rows_per_table: int) -> list[Result]:
    """``tables`` small tables copied incrementally with merge, then a second run that finds nothing new."""
    source_url = bench.new_database("inc_src")
    dest_url = bench.new_database("inc_dst")
    try:
        names = pgdata.create_small_tables(source_url, tables, rows_per_table)
        job = write_job(bench.work / "incremental" / "job.yaml", "bench-incremental", source_url, dest_url,
                        [{"name": n, "incremental_column": "updated_at"} for n in names],
                        {"mode": "incremental", "update_method": "merge", "create_tables": True})
        total = tables * rows_per_table
        first_m = bench.measure("incremental_first", _copyjob_command(job), cwd=job.parent)
        first = _result("incremental_first", f"copyjob incremental, first run ({tables} tables × "
                        f"{rows_per_table:,} rows)", total, first_m)
        first.vs_raw = False
        first_run = _attach_history(first, job) if first_m.ok else None
        if first_run is not None:
            written = sum(t["rows_written"] for t in first_run["tables"])
            first.check = "rows ✓" if written == total else "rows ✗"
            first.ok = written == total and first_run["status"] == "ok"
            if written != total:
                first.error = f"wrote {written:,} rows, expected {total:,}"
        if not first_m.ok:
            return [first]
        second_m = bench.measure("incremental_noop", _copyjob_command(job), cwd=job.parent)
        second = _result("incremental_noop", f"copyjob incremental, no-op run ({tables} tables)", 0, second_m,
                         per_row=False)
        second.details["tables"] = tables
        second_run = _attach_history(second, job) if second_m.ok else None
        if second_run is not None:
            modes = {t["mode"] for t in second_run["tables"]}
            written = sum(t["rows_written"] for t in second_run["tables"])
            dest_rows = sum(int(pgdata.scalar(dest_url, f"SELECT count(*) FROM {n}")) for n in names)
            second.ok = second_run["status"] == "ok" and modes == {"incremental"} and dest_rows == total
            second.check = f"modes {','.join(sorted(modes))}; dest rows {'✓' if dest_rows == total else '✗'}"
            second.notes.append(f"{written} rows re-read at the watermark boundary (merge reads `>=`)")
            second.details["rows_written"] = written
            if dest_rows != total:
                second.error = f"destination holds {dest_rows:,} rows, expected {total:,}"
        return [first, second]
    finally:
        bench.drop_database("inc_dst")
        bench.drop_database("inc_src")


# ---------------------------------------------------------------- dlt and sling


def dlt_copy(bench: Bench, source_url: str, source: pgdata.TableFacts) -> Result:
    """dlt ``sql_table(backend="pyarrow")`` → postgres destination, in its own process."""
    key, dest_db, label = "dlt", "dlt_dst", "dlt sql_table(pyarrow) → postgres"
    try:
        import dlt  # noqa: F401  (only to know it is installed; the copy runs in a subprocess)
    except ImportError as exc:
        return Result(key=key, label=label, rows=source.rows, error=f"dlt is not installed: {exc}", check="error")
    dest_url = bench.new_database(dest_db)
    try:
        home = bench.work / "dlt"
        env = {"BENCH_SRC_URL": source_url, "BENCH_DST_URL": dest_url, "BENCH_DLT_DIR": str(home / "pipelines"),
               "DLT_DATA_DIR": str(home / "data"), "RUNTIME__DLTHUB_TELEMETRY": "false", "PYTHONPATH": str(REPO)}
        home.mkdir(parents=True, exist_ok=True)
        m = bench.measure(key, [sys.executable, "-m", "benchmarks.dlt_load"], env, cwd=home)
        verdict = pgdata.compare(source, pgdata.table_facts(dest_url), expect_types=None, expect_pk=True,
                                 strict=False) if m.ok else None
        result = _result(key, label, source.rows, m, verdict)
        if m.ok:
            lines = m.stdout().strip().splitlines()
            try:
                summary = json.loads(lines[-1]) if lines else {}
            except json.JSONDecodeError:
                summary = {}
            result.details.update(summary)
            if summary.get("loader_file_formats"):
                result.notes.append("dlt loaded " + "+".join(summary["loader_file_formats"]) + " files")
        return result
    finally:
        bench.drop_database(dest_db)


def sling_binary() -> Path | None:
    """The sling executable shipped inside the ``sling-linux-amd64`` wheel (run directly: no download)."""
    try:
        import sling_linux_amd64
    except ImportError:
        return None
    path = Path(sling_linux_amd64.SLING_BIN)
    return path if path.is_file() else None


def sling_copy(bench: Bench, source_url: str, source: pgdata.TableFacts) -> Result:
    key, dest_db, label = "sling", "sling_dst", "sling run --mode full-refresh"
    binary = sling_binary()
    if binary is None:
        return Result(key=key, label=label, rows=source.rows, check="error",
                      error="sling binary not found: pip install sling-linux-amd64")
    dest_url = bench.new_database(dest_db)
    try:
        home = bench.work / "sling"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        env = {"PG_SRC": source_url + "?sslmode=disable", "PG_DST": dest_url + "?sslmode=disable",
               "SLING_HOME_DIR": str(home), "SLING_TEMP_DIR": str(home / "tmp"), "SLING_DISABLE_TELEMETRY": "true",
               "SLING_LOGGING_COLOR": "false"}
        m = bench.measure(key, [str(binary), "run", "--src-conn", "PG_SRC", "--src-stream", ORDERS,
                                "--tgt-conn", "PG_DST", "--tgt-object", ORDERS, "--mode", "full-refresh"], env)
        verdict = pgdata.compare(source, pgdata.table_facts(dest_url), expect_types=None, expect_pk=True,
                                 strict=False) if m.ok else None
        result = _result(key, label, source.rows, m, verdict)
        version = (binary.parent / "VERSION")
        if version.is_file():
            result.details["sling_version"] = version.read_text().strip()
        return result
    finally:
        bench.drop_database(dest_db)
