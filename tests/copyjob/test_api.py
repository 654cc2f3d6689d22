"""The Python API (copyjob.api, re-exported by ``import copyjob``): its pinned surface, a light import, loading
from a file and from a dict with the same validation errors, and runs against real systems."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import copyjob
from copyjob.core.errors import JobFileError
from tests.helpers import ROOT, duckdb_rows, sqlite_exec, sqlite_rows, write_job
from tests.pg_cdc import execute

pytestmark = pytest.mark.timeout(300)


def test_the_public_names_are_pinned() -> None:
    assert copyjob.__all__ == ["CopyjobError", "Job", "JobFileError", "RunResult", "StatusResult", "TableResult",
                               "TableStatus", "__version__", "history", "load_job", "run", "status"]
    for name in copyjob.__all__:
        assert getattr(copyjob, name) is not None


def test_import_copyjob_loads_nothing_heavy() -> None:
    code = ("import sys, copyjob; heavy = ('pydantic', 'sqlalchemy', 'pyarrow', 'confluent_kafka', 'psycopg', "
            "'duckdb', 'typer', 'rich'); print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def shop_job(tmp_path: Path, **table: Any) -> dict[str, Any]:
    sqlite_exec(tmp_path / "src.db", "CREATE TABLE items (id INTEGER PRIMARY KEY, ts INTEGER, name TEXT)")
    sqlite_exec(tmp_path / "src.db", "INSERT INTO items VALUES (?, ?, ?)", [(i, i, f"n{i}") for i in range(1, 101)])
    return {"job": "api_shop", "source": {"url": f"sqlite:///{tmp_path}/src.db"},
            "destination": {"url": f"sqlite:///{tmp_path}/dst.db"},
            "tables": [{"name": "items", "target": "items_copy", "mode": "incremental", "incremental_column": "ts",
                        "key": ["id"], **table}]}


def test_run_status_history_sqlite_to_sqlite_from_a_file(tmp_path: Path) -> None:
    path = write_job(tmp_path / "job.yaml", shop_job(tmp_path))
    job = copyjob.load_job(path)
    assert (job.name, job.tables, job.path) == ("api_shop", ("items_copy",), path)

    first = copyjob.run(job)
    assert isinstance(first, copyjob.RunResult) and first.ok
    [table] = first.tables
    assert (table.table, table.source, table.mode, table.status) == ("items_copy", "items", "full", "ok")
    assert (table.rows_read, table.rows_written, table.watermark_before, table.watermark_after) == (100, 100, None, 100)
    assert table.duration_s > 0 and table.error is None

    sqlite_exec(tmp_path / "src.db", "INSERT INTO items VALUES (101, 101, 'late')")
    second = copyjob.run(job, tables=["items"])
    assert [(t.mode, t.rows_written, t.watermark_before, t.watermark_after) for t in second.tables] == [
        ("incremental", 1, 100, 101)]
    assert sqlite_rows(tmp_path / "dst.db", "SELECT count(*) FROM items_copy") == [(101,)]

    status = copyjob.status(job)
    assert isinstance(status, copyjob.StatusResult)
    [row] = status.tables
    assert (row.table, row.source, row.mode, row.last_outcome, row.watermark, row.next_run) == (
        "items_copy", "items", "incremental", "ok", 101, "incremental")

    runs = copyjob.history(job)
    assert [r.run_id for r in runs] == [second.run_id, first.run_id]
    assert runs[0].tables == second.tables and runs[0].destination == job.destination


def test_a_job_from_a_dict_with_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a dict's relative paths and default state are the current directory's
    doc = shop_job(tmp_path)
    doc["destination"]["url"] = "sqlite:///${DST_FILE}"
    job = copyjob.load_job(doc, variables={"DST_FILE": "from_dict.db"})
    assert job.path is None
    result = copyjob.run(job, state=str(tmp_path / "state.db"))
    assert result.ok
    assert sqlite_rows(tmp_path / "from_dict.db", "SELECT count(*) FROM items_copy") == [(100,)]
    assert len(copyjob.history(job, state=str(tmp_path / "state.db"))) == 1


def test_a_dict_gets_the_file_s_validation_errors_without_file_or_line(tmp_path: Path) -> None:
    doc = shop_job(tmp_path, key="id")
    doc["transprot"] = "direct"
    doc["destination"]["url"] = "${NOWHERE}"
    with pytest.raises(JobFileError) as from_dict:
        copyjob.load_job(doc)
    with pytest.raises(JobFileError) as from_file:
        copyjob.load_job(write_job(tmp_path / "job.yaml", doc))

    def fields(exc: JobFileError) -> list[str]:
        return sorted(p.field or "" for p in exc.problems)

    assert fields(from_dict.value) == fields(from_file.value) == ["destination.url", "tables[0].key",
                                                                  "transprot"]
    lines = str(from_dict.value).splitlines()
    assert "transprot: unknown key (did you mean transport?)" in lines
    assert any(line.startswith("destination.url: unresolved variable ${NOWHERE}") for line in lines)
    assert all(p.file is None and p.line is None for p in from_dict.value.problems)
    assert all(p.file == str(tmp_path / "job.yaml") and p.line for p in from_file.value.problems)


def test_a_job_that_does_not_fit_its_source_raises_before_writing(tmp_path: Path) -> None:
    doc = shop_job(tmp_path)
    doc["tables"].append({"name": "missing_table", "mode": "full"})
    job = copyjob.load_job(write_job(tmp_path / "job.yaml", doc))
    with pytest.raises(JobFileError, match=r"tables\[1\]\.name: source table 'missing_table' does not exist"):
        copyjob.run(job)
    assert not (tmp_path / "dst.db").exists()


def test_postgresql_to_duckdb(tmp_path: Path, pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, updated int NOT NULL, status text)",
            "INSERT INTO orders SELECT g, g, 'new' FROM generate_series(1, 1000) g")
    job = copyjob.load_job({
        "job": "api_pg", "source": {"url": pg_url}, "destination": {"url": f"duckdb:///{tmp_path}/dw.duckdb"},
        "copy": {"mode": "incremental", "update_method": "merge"},
        "tables": [{"name": "orders", "incremental_column": "updated", "key": ["id"]}]})
    state = str(tmp_path / "state.db")
    assert copyjob.run(job, state=state).ok
    execute(pg_url, "UPDATE orders SET status = 'paid', updated = 1001 WHERE id = 7")
    second = copyjob.run(job, state=state)
    [orders] = second.tables  # the rows at the watermark are read again (>=): 1000 and 1001
    assert (orders.table, orders.mode, orders.watermark_before, orders.watermark_after) == (
        "orders", "incremental", 1000, 1001)
    assert orders.rows_written >= 1
    assert duckdb_rows(tmp_path / "dw.duckdb", "SELECT status FROM orders WHERE id = 7") == [("paid",)]
    assert [t.watermark for t in copyjob.status(job, state=state).tables] == [1001]
