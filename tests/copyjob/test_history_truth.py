"""The run history tells the truth: a run ended by a signal is ``interrupted``, a run whose process died is
marked ``interrupted`` by the next run, and a job file broken while ``serve`` runs is a failed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.copyjob.test_serve import Served, make_job, runs, serve, wait_until
from tests.helpers import ROOT, copyjob, sqlite_script

pytestmark = pytest.mark.timeout(180)
__all__ = ["serve"]  # the fixture, shared with test_serve


def start_run(job: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "copyjob", "run", str(job)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})


def history(job: Path) -> list[dict[str, Any]]:
    result = copyjob("history", job, "--json")
    assert result.code == 0, result.output
    listed: list[dict[str, Any]] = json.loads(result.stdout)
    return listed


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_run_ended_by_a_signal_is_interrupted(tmp_path: Path, signum: signal.Signals) -> None:
    job = make_job(tmp_path, {"big": 200_000}, slow=True)  # outlasts any signal
    proc = start_run(job)
    try:
        wait_until(lambda: any(r["status"] == "running" for r in runs(tmp_path)), 60, "the run to start")
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert [r["status"] for r in runs(tmp_path)] == ["interrupted"]
    assert history(job)[0]["status"] == "interrupted"


def test_a_killed_run_is_marked_interrupted_when_the_next_run_starts(tmp_path: Path) -> None:
    job = make_job(tmp_path, {"big": 200_000}, slow=True)  # outlasts any signal
    proc = start_run(job)
    try:
        wait_until(lambda: any(r["status"] == "running" for r in runs(tmp_path)), 60, "the run to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert [r["status"] for r in runs(tmp_path)] == ["running"]  # nobody left to say otherwise

    (tmp_path / "small").mkdir()
    make_job(tmp_path / "small", {"big": 10})  # the same job, now fast: point it at a small source
    job.write_text(job.read_text().replace("sqlite:///src.db", "sqlite:///small/src.db"))
    result = copyjob("run", job, "--wait", "60")
    assert result.code == 0, result.output
    assert [r["status"] for r in runs(tmp_path)] == ["interrupted", "ok"]


def test_a_job_file_broken_while_serve_runs_is_a_failed_run(
        tmp_path: Path, serve: Callable[..., Served]) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = make_job(tmp_path / "one", {"orders": 50}, schedules=[{"every": "0.5s"}])
    other = make_job(tmp_path / "two", {"items": 50}, schedules=[{"every": "0.5s"}])
    other.write_text(other.read_text().replace("job: served", "job: other"))
    served = serve(first, other)
    wait_until(lambda: any(r["status"] == "ok" for r in runs(tmp_path / "one")), 60, "a first good run")

    doc = yaml.safe_load(first.read_text())
    doc["copy"]["mode"] = "sometimes"
    first.write_text(yaml.safe_dump(doc, sort_keys=False))
    failed = wait_until(lambda: [r for r in runs(tmp_path / "one") if r["status"] == "failed"], 60,
                        "the broken job file recorded as a failed run")
    assert failed[0]["trigger"].startswith("schedule: every 0.5s")
    seen = sum(r["status"] == "ok" for r in runs(tmp_path / "two"))
    wait_until(lambda: sum(r["status"] == "ok" for r in runs(tmp_path / "two")) > seen + 1, 60,
               "the other job to keep running")
    assert served.proc.poll() is None, served.text()
    assert "ERROR job=served" in served.text() and "copy.mode" in served.text(), served.text()

    check = copyjob("check", other)
    assert check.code == 0, check.output
    # history and check read the job file, so they see the failure once it is fixed again
    first.write_text(first.read_text().replace("sometimes", "full"))
    listed = history(first)
    broken = [r for r in listed if r["status"] == "failed"]
    assert broken and "copy.mode" in broken[0]["tables"][0]["error"], listed
    wait_until(lambda: runs(tmp_path / "one")[-1]["status"] == "ok", 60, "runs to go on once it is fixed")
    assert served.stop() == 0, served.text()


def test_a_broken_job_file_at_serve_start_is_a_failed_run_and_the_others_are_served(
        tmp_path: Path, serve: Callable[..., Served]) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    broken = make_job(tmp_path / "one", {"orders": 50}, schedules=[{"every": "0.5s"}])
    broken.write_text(broken.read_text().replace("mode: full", "mode: sometimes"))
    other = make_job(tmp_path / "two", {"items": 50}, schedules=[{"every": "0.5s"}])
    other.write_text(other.read_text().replace("job: served", "job: other"))
    served = serve(broken, other)
    wait_until(lambda: any(r["status"] == "ok" for r in runs(tmp_path / "two")), 60, "the other job to run")
    failed = runs(tmp_path / "one")
    assert [(r["status"], r["trigger"]) for r in failed] == [("failed", "serve start")]
    assert "ERROR job=served status=failed" in served.text() and "copy.mode" in served.text(), served.text()
    assert served.stop() == 0, served.text()

    broken.write_text(broken.read_text().replace("sometimes", "full"))  # history reads the job file
    listed = history(broken)
    assert listed[0]["status"] == "failed" and "copy.mode" in listed[0]["tables"][0]["error"], listed
    check = copyjob("check", broken)
    assert check.code == 1 and "failed: served.orders: run " in check.stdout, check.output


def test_serve_with_only_a_broken_job_file_stops_with_its_error(tmp_path: Path) -> None:
    job = make_job(tmp_path, {"orders": 5}, schedules=[{"every": "1s"}])
    job.write_text(job.read_text().replace("mode: full", "mode: sometimes"))
    result = copyjob("serve", job, timeout=60)
    assert result.code == 2 and "copy.mode" in result.output, result.output
    assert [r["status"] for r in runs(tmp_path)] == ["failed"]


def test_a_killed_run_is_marked_interrupted_when_serve_starts(tmp_path: Path,
                                                              serve: Callable[..., Served]) -> None:
    job = make_job(tmp_path, {"big": 20000}, slow=True, schedules=[{"every": "24h"}])
    proc = start_run(job)
    try:
        wait_until(lambda: any(r["status"] == "running" for r in runs(tmp_path)), 60, "the run to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    served = serve(job)
    wait_until(lambda: [r["status"] for r in runs(tmp_path)] == ["interrupted"], 60, "the run marked interrupted")
    assert served.stop() == 0, served.text()


def test_a_job_that_no_longer_fits_its_source_under_serve_is_a_failed_run(
        tmp_path: Path, serve: Callable[..., Served]) -> None:
    job = make_job(tmp_path, {"orders": 20}, schedules=[{"every": "0.5s"}])
    served = serve(job)
    wait_until(lambda: any(r["status"] == "ok" for r in runs(tmp_path)), 60, "a first good run")
    sqlite_script(tmp_path / "src.db", "DROP VIEW orders")
    failed = wait_until(lambda: [r for r in runs(tmp_path) if r["status"] == "failed"], 60, "a failed run")
    assert served.stop() == 0, served.text()
    assert "ERROR job=served" in served.text() and "does not exist" in served.text(), served.text()
    listed = history(job)
    recorded = next(r for r in listed if r["run_id"] == failed[0]["run_id"])
    assert "does not exist" in recorded["tables"][0]["error"], recorded
    check = copyjob("check", job)
    assert check.code == 1 and "failed: served.orders:" in check.stdout, check.output


def test_a_merge_says_how_many_rows_it_read_again_at_the_watermark(tmp_path: Path) -> None:
    sqlite_script(tmp_path / "src.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, ts INTEGER);"
                                       "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 99) "
                                       "INSERT INTO t SELECT i, i / 10 FROM s;")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "job": "merged", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "incremental", "update_method": "merge"},
        "tables": [{"name": "t", "incremental_column": "ts", "key": ["id"]}]}))
    assert copyjob("run", job).code == 0
    sqlite_script(tmp_path / "src.db", "INSERT INTO t VALUES (100, 9), (101, 10), (102, 10)")
    result = copyjob("run", job)
    assert result.code == 0, result.output
    assert "note: t: 11 of the 13 rows read are at the last watermark (9)" in result.stdout, result.output
    latest = history(job)[0]["tables"][0]
    assert (latest["rows_read"], latest["reread_rows"], latest["changes"]) == (13, 11, None), latest
