"""Crashes lose nothing and double nothing: the process dies at awkward moments, the next run repairs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from copyjob.offsets import default_state_url, open_state_store

from copyjob.core.contracts import StateStore, TableState
from copyjob.loader import load_job
from copyjob.runner import JobRun
from tests.helpers import ROOT, copyjob, duckdb_rows, sqlite_exec, sqlite_rows, sqlite_script, write_job


class DiesOnSave:
    """A state store whose process 'dies' right after the destination committed (before the state save)."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner

    def save(self, job: str, state: TableState) -> None:
        if state.last_status == "ok":
            raise SystemExit("killed between the destination commit and the state save")
        self.inner.save(job, state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make_source(db: Path, start: int, count: int) -> None:
    sqlite_script(db, "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, payload TEXT, seq INTEGER);")
    sqlite_exec(db, "INSERT INTO events VALUES (?, ?, ?)",
                [(i, f"payload {i}" * 3, i) for i in range(start, start + count)])


def append_job(tmp_path: Path) -> Path:
    return write_job(tmp_path / "job.yaml", {
        "job": "crash", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "duckdb:///dst.duckdb"},
        "copy": {"mode": "incremental", "update_method": "append", "batch_rows": 5000},
        "tables": [{"name": "events", "incremental_column": "seq"}]})


def assert_equal(tmp_path: Path) -> None:
    src = sqlite_rows(tmp_path / "src.db", "SELECT count(*), sum(id) FROM events")
    dst = duckdb_rows(tmp_path / "dst.duckdb", "SELECT count(*), sum(id) FROM events")
    dup = duckdb_rows(tmp_path / "dst.duckdb", "SELECT count(*) - count(DISTINCT id) FROM events")
    assert dup == [(0,)]
    assert dst == src


def test_death_between_destination_commit_and_state_save_does_not_double(tmp_path: Path) -> None:
    make_source(tmp_path / "src.db", 1, 1000)
    job_file = append_job(tmp_path)
    loaded = load_job(job_file)
    state_url = default_state_url(loaded.path)
    dying = JobRun(loaded, lambda: DiesOnSave(open_state_store(state_url)))  # type: ignore[arg-type, return-value]
    with pytest.raises(SystemExit):
        dying.run()
    dying.close()
    assert duckdb_rows(tmp_path / "dst.duckdb", "SELECT count(*) FROM events") == [(1000,)]
    make_source(tmp_path / "src.db", 1001, 10)
    out = copyjob("run", job_file)
    assert out.code == 0, out.output
    assert_equal(tmp_path)


@pytest.mark.parametrize("fault", ["batch-written:1", "batch-written:7", "destination-committed:1"])
def test_sigkill_mid_run_then_rerun_equals_source(tmp_path: Path, fault: str) -> None:
    """The process kills itself (SIGKILL) at an exact point: inside the load's transaction after some batches,
    or after the destination committed but before the state store was written; the next run repairs."""
    make_source(tmp_path / "src.db", 1, 20_000)
    job_file = append_job(tmp_path)
    assert copyjob("run", job_file).code == 0
    make_source(tmp_path / "src.db", 20_001, 60_000)
    killed = copyjob("run", job_file, env={"COPYJOB_FAULT": fault})
    assert killed.code == -signal.SIGKILL, killed.output
    out = copyjob("run", job_file)
    assert out.code == 0, out.output
    assert_equal(tmp_path)
    assert copyjob("run", job_file).code == 0
    assert_equal(tmp_path)


def test_sigkill_from_outside_mid_run(tmp_path: Path) -> None:
    """A kill from another process at whatever moment the run is in."""
    make_source(tmp_path / "src.db", 1, 400_000)
    job_file = append_job(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "copyjob", "run", str(job_file)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = copyjob("run", job_file)
    assert out.code == 0, out.output
    assert_equal(tmp_path)
