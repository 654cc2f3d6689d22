"""The benchmark's scenarios. Each one copies into a fresh database, measures the copy as a subprocess, checks
the destination against the source and returns :class:`~benchmarks.results.Result` lines.

Each measured copy runs ``Bench.repeat`` times (each time into a new database) and is reported by its median
(see :func:`~benchmarks.results.combine`); repeating stops at the first failure. Every measured step starts
with a ``CHECKPOINT``, so that the dirty pages of an earlier step are not written out during the next one,
and every destination database is dropped once checked.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import pgdata
from benchmarks.measure import Measurement, run_measured
from benchmarks.results import Result, combine_by_key
from tests.services.postgres import PASSWORD, PG_BIN, SUPERUSER, PostgresServer

VENV_BIN = Path(sys.executable).parent  # .venv/bin when run as `.venv/bin/python -m benchmarks.run`
REPO = Path(__file__).resolve().parent.parent
ORDERS = "public.orders"


@dataclass
class Bench:
    """What every scenario shares: the server, a work folder (job files, logs), repeats and the timeout."""

    server: PostgresServer
    work: Path
    timeout_s: float
    repeat: int = 1
    databases: list[str] = field(default_factory=list)
    _runs: int = 0

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
        """Run a command measured; its output goes to ``logs/NAME-N.out|err`` (N counts every measured run)."""
        self.checkpoint()
        self._runs += 1
        return run_measured(command, log_dir=self.logs, name=f"{name}-{self._runs}",
                            env={**os.environ, **(env or {})}, cwd=cwd or self.work, timeout_s=self.timeout_s)

    def repeated(self, once: Callable[[], list[Result]], times: int | None = None) -> list[Result]:
        """``once()`` run ``times`` (default ``repeat``) times, stopping at a failure; lines combined by key."""
        runs: list[list[Result]] = []
        for _ in range(times or self.repeat):
            lines = once()
            runs.append(lines)
            if not all(r.ok for r in lines):
                break
        return combine_by_key(runs)

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
    url = bench.new_database(database)
    started = time.perf_counter()
    pgdata.create_orders(url, rows)
    seconds = time.perf_counter() - started
    return url, pgdata.table_facts(url), seconds


# ---------------------------------------------------------------- raw pipe


def raw_pipe(bench: Bench, source_db: str, source: pgdata.TableFacts, baseline: str = "") -> list[Result]:
    """psql binary COPY out | psql binary COPY in, into a pre-created table without a key; then the key.
    ``baseline`` tells these lines from the raw pipe of another table size (see Result.baseline)."""
    results = bench.repeated(lambda: _raw_pipe_once(bench, source_db, source))
    for r in results:
        if baseline:
            r.key += baseline
            r.baseline = baseline
            r.label += f", {source.rows:,} rows"
        if r.key == "raw_pipe_pk" and "copy_seconds" in r.details:
            r.notes.append(f"COPY {r.details['copy_seconds']:.2f}s + ADD PRIMARY KEY "
                           f"{r.details['primary_key_seconds']:.2f}s (medians)")
    return results


def _raw_pipe_once(bench: Bench, source_db: str, source: pgdata.TableFacts) -> list[Result]:
    dest_db = "raw_dst"
    dest_url = bench.new_database(dest_db)
    pgdata.exec_sql(dest_url, pgdata.orders_ddl(primary_key=False))
    out = bench.psql_command(source_db, f"COPY {ORDERS} TO STDOUT (FORMAT binary)")
    into = bench.psql_command(dest_db, f"COPY {ORDERS} FROM STDIN (FORMAT binary)")
    pipeline = f"set -o pipefail; {shlex.join(out)} | {shlex.join(into)}"
    env = {"PGPASSWORD": PASSWORD}
    try:
        copy = bench.measure("raw_pipe", ["bash", "-c", pipeline], env)
        verdict = pgdata.compare(source, pgdata.table_facts(dest_url), expect_types=None, expect_pk=False) \
            if copy.ok else None
        copy_result = _result("raw_pipe", "raw pipe: psql COPY binary → psql COPY binary (no PK)", source.rows,
                              copy, verdict)
        if not copy.ok:
            return [copy_result]
        key = bench.measure("raw_pipe_pk", bench.psql_command(dest_db, f"ALTER TABLE {ORDERS} ADD PRIMARY KEY (id)"),
                            env)
        with_key = _result("raw_pipe_pk", "raw pipe + ADD PRIMARY KEY", source.rows, key)
        if key.ok:
            with_key.seconds = copy.seconds + key.seconds
            with_key.peak_rss_mb = max(copy.peak_rss_mb, key.peak_rss_mb)
            with_key.cpu_seconds = copy.cpu_seconds + key.cpu_seconds
            with_key.details = {"copy_seconds": copy.seconds, "primary_key_seconds": key.seconds}
            verdict = pgdata.compare(source, pgdata.table_facts(dest_url, fingerprint=False), expect_types=None,
                                     expect_pk=True)
            with_key.ok, with_key.check = verdict.ok, verdict.summary
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
        for i, (k, v) in enumerate(table.items()):
            lines.append(f"  {'- ' if i == 0 else '  '}{k}: {_yaml(v)}")
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
    """Add copyjob's own account of the run: per-table records, and for one table its own duration."""
    run = copyjob_history(job_file)
    if run is not None:
        tables = run.get("tables", [])
        result.details["copyjob_tables"] = tables
        if len(tables) == 1:
            result.details["copyjob_table_seconds"] = tables[0]["duration_s"]
    return run


def _note_copyjob_time(result: Result) -> Result:
    inner = result.details.get("copyjob_table_seconds")
    if isinstance(inner, int | float) and result.seconds:
        result.notes.append(f"copyjob's own time for the table {inner:.2f}s of {result.seconds:.2f}s; the rest "
                            "is process start, connecting, checks and state")
    return result


def copyjob_full(bench: Bench, source_url: str, source: pgdata.TableFacts, *, key: str, label: str,
                 dest_db: str) -> Result:
    """copyjob full copy into a fresh database: it creates the table (same types) and adds the key after."""
    [result] = bench.repeated(lambda: [_copyjob_full_once(bench, source_url, source, key, label, dest_db)])
    return _note_copyjob_time(result)


def _copyjob_full_once(bench: Bench, source_url: str, source: pgdata.TableFacts, key: str, label: str,
                       dest_db: str) -> Result:
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
    [result] = bench.repeated(lambda: [_copyjob_decoded_once(bench, source_url, source)])
    result.notes.append("destination pre-created without a key, with " +
                        ", ".join(f"{c} {t}" for c, t in DECODED_OVERRIDES.items()))
    return _note_copyjob_time(result)


def _copyjob_decoded_once(bench: Bench, source_url: str, source: pgdata.TableFacts) -> Result:
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
        _attach_history(result, job)
        return result
    finally:
        bench.drop_database(dest_db)


def copyjob_big(bench: Bench, rows: int) -> list[Result]:
    """The memory bound: a full copy of a ``rows``-row table (its own source database), with the raw pipe on
    the same table for the ratios."""
    source_url, source, seconds = prepare_source(bench, "big_src", rows)
    try:
        raw = raw_pipe(bench, "big_src", source, baseline="_big")
        result = copyjob_full(bench, source_url, source, key="copyjob_big",
                              label=f"copyjob full copy, {rows:,} rows (memory bound)", dest_db="big_dst")
        result.baseline = "_big"
        result.details["source_generation_seconds"] = round(seconds, 3)
        return [*raw, result]
    finally:
        bench.drop_database("big_src")


def noop_incremental(bench: Bench, tables: int, rows_per_table: int) -> list[Result]:
    """``tables`` small tables copied incrementally with merge, then runs that find nothing new."""
    source_url = bench.new_database("inc_src")
    dest_url = bench.new_database("inc_dst")
    try:
        names = pgdata.create_small_tables(source_url, tables, rows_per_table)
        job = write_job(bench.work / "incremental" / "job.yaml", "bench-incremental", source_url, dest_url,
                        [{"name": n, "incremental_column": "updated_at"} for n in names],
                        {"mode": "incremental", "update_method": "merge", "create_tables": True})
        first = _incremental_first(bench, job, tables, rows_per_table)
        if not first.ok:
            return [first]
        [noop] = bench.repeated(lambda: [_incremental_noop(bench, job, dest_url, names, rows_per_table)])
        noop.details["tables"] = tables
        if "rows_written" in noop.details:
            noop.notes.append(f"{noop.details['rows_written']:.0f} rows re-read at the watermark boundary "
                              "(merge reads `>=` the last watermark)")
        return [first, noop]
    finally:
        bench.drop_database("inc_dst")
        bench.drop_database("inc_src")


def _incremental_first(bench: Bench, job: Path, tables: int, rows_per_table: int) -> Result:
    total = tables * rows_per_table
    m = bench.measure("incremental_first", _copyjob_command(job), cwd=job.parent)
    result = _result("incremental_first", f"copyjob incremental, first run ({tables} tables × "
                     f"{rows_per_table:,} rows)", total, m)
    result.vs_raw = False
    run = _attach_history(result, job) if m.ok else None
    if run is not None:
        written = sum(t["rows_written"] for t in run["tables"])
        result.ok = written == total and run["status"] == "ok"
        result.check = "rows ✓" if written == total else "rows ✗"
        if written != total:
            result.error = f"wrote {written:,} rows, expected {total:,}"
    return result


def _incremental_noop(bench: Bench, job: Path, dest_url: str, names: list[str], rows_per_table: int) -> Result:
    total = len(names) * rows_per_table
    m = bench.measure("incremental_noop", _copyjob_command(job), cwd=job.parent)
    result = _result("incremental_noop", f"copyjob incremental, no-op run ({len(names)} tables)", 0, m,
                     per_row=False)
    result.vs_raw = False
    run = _attach_history(result, job) if m.ok else None
    if run is not None:
        modes = {t["mode"] for t in run["tables"]}
        written = sum(t["rows_written"] for t in run["tables"])
        dest_rows = sum(int(pgdata.scalar(dest_url, f"SELECT count(*) FROM {n}")) for n in names)
        result.ok = run["status"] == "ok" and modes == {"incremental"} and dest_rows == total
        result.check = f"mode {','.join(sorted(modes))}; dest rows {'✓' if dest_rows == total else '✗'}"
        result.details["rows_written"] = written
        if dest_rows != total:
            result.error = f"destination holds {dest_rows:,} rows, expected {total:,}"
        elif modes != {"incremental"}:
            result.error = f"expected incremental runs, got {sorted(modes)}"
    return result


# ---------------------------------------------------------------- dlt and sling


def dlt_copy(bench: Bench, source_url: str, source: pgdata.TableFacts) -> Result:
    """dlt ``sql_table(backend="pyarrow")`` → postgres destination, in its own process."""
    [result] = bench.repeated(lambda: [_dlt_once(bench, source_url, source)])
    formats = result.details.get("loader_file_formats")
    if formats:
        result.notes.append("dlt loaded " + "+".join(formats) + " files")
    return result


def _dlt_once(bench: Bench, source_url: str, source: pgdata.TableFacts) -> Result:
    key, dest_db = "dlt", "dlt_dst"
    dest_url = bench.new_database(dest_db)
    home = bench.work / "dlt"
    try:
        home.mkdir(parents=True, exist_ok=True)
        env = {"BENCH_SRC_URL": source_url, "BENCH_DST_URL": dest_url, "BENCH_DLT_DIR": str(home / "pipelines"),
               "DLT_DATA_DIR": str(home / "data"), "RUNTIME__DLTHUB_TELEMETRY": "false", "PYTHONPATH": str(REPO)}
        m = bench.measure(key, [sys.executable, "-m", "benchmarks.dlt_load"], env, cwd=home)
        verdict = pgdata.compare(source, pgdata.table_facts(dest_url), expect_types=None, expect_pk=True,
                                 strict=False) if m.ok else None
        result = _result(key, "dlt sql_table(pyarrow) → postgres", source.rows, m, verdict)
        if m.ok:
            lines = m.stdout().strip().splitlines()
            try:
                result.details.update(json.loads(lines[-1]) if lines else {})
            except json.JSONDecodeError:
                pass
        return result
    finally:
        bench.drop_database(dest_db)
        shutil.rmtree(home / "pipelines", ignore_errors=True)  # a fresh pipeline (no state) every time


def sling_binary() -> Path | None:
    """The sling executable shipped inside the ``sling-linux-amd64`` wheel (run directly: no download)."""
    try:
        import sling_linux_amd64
    except ImportError:
        return None
    path = Path(sling_linux_amd64.SLING_BIN)
    return path if path.is_file() else None


def sling_copy(bench: Bench, source_url: str, source: pgdata.TableFacts) -> Result:
    binary = sling_binary()
    if binary is None:
        return Result(key="sling", label="sling (not run)", rows=source.rows, check="error",
                      error="sling binary not found: pip install sling-linux-amd64")
    [result] = bench.repeated(lambda: [_sling_once(bench, binary, source_url, source)])
    version = binary.parent / "VERSION"
    if version.is_file():
        result.details["sling_version"] = version.read_text().strip()
    return result


def _sling_once(bench: Bench, binary: Path, source_url: str, source: pgdata.TableFacts) -> Result:
    dest_db = "sling_dst"
    dest_url = bench.new_database(dest_db)
    try:
        home = bench.work / "sling"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        env = {"PG_SRC": source_url + "?sslmode=disable", "PG_DST": dest_url + "?sslmode=disable",
               "SLING_HOME_DIR": str(home), "SLING_TEMP_DIR": str(home / "tmp"), "SLING_DISABLE_TELEMETRY": "true",
               "SLING_LOGGING_COLOR": "false"}
        m = bench.measure("sling", [str(binary), "run", "--src-conn", "PG_SRC", "--src-stream", ORDERS,
                                    "--tgt-conn", "PG_DST", "--tgt-object", ORDERS, "--mode", "full-refresh"], env)
        verdict = pgdata.compare(source, pgdata.table_facts(dest_url), expect_types=None, expect_pk=True,
                                 strict=False) if m.ok else None
        return _result("sling", "sling run --mode full-refresh", source.rows, m, verdict)
    finally:
        bench.drop_database(dest_db)
