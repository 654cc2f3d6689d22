"""``copyjob serve`` end to end: a real process serving SQLite → SQLite jobs on schedules and file arrivals.

The tests poll the state store (a SQLite file) for conditions instead of sleeping fixed times, and read the
final answers through the real CLI.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from copyjob.offsets import open_state_store

from copyjob.core.errors import UsageError
from copyjob.jobfile import Schedule
from copyjob.loader import load_job
from copyjob.schedule import ScheduleRule, save_last_fire
from copyjob.serve import find_job_files
from tests.helpers import ROOT, copyjob, sqlite_rows, sqlite_script, write_job

pytestmark = pytest.mark.timeout(60)


SLOW_STEPS = 2000
"""Work per row of a slow source: about half a millisecond, so a thousand rows take about half a second."""


def make_source(db: Path, tables: dict[str, int], *, slow: bool = False) -> None:
    """Tables of ``rows`` rows each, kept in ``<name>_data``. A slow source reads each table through a view
    that does deliberate work per row, so that a run lasts seconds whatever the disk."""
    script = ""
    for name, rows in tables.items():
        script += (f"CREATE TABLE {name}_data (id INTEGER PRIMARY KEY, v TEXT, n REAL);"
                   f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows}) "
                   f"INSERT INTO {name}_data SELECT i, 'value number ' || i, i * 1.5 FROM s;")
        busy = (f" WHERE (WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < "
                f"{SLOW_STEPS} + d.id % 2) SELECT count(*) FROM c) > 0" if slow else "")
        script += f"CREATE VIEW {name} AS SELECT d.id AS id, d.v AS v, d.n AS n FROM {name}_data d{busy};"
    sqlite_script(db, script)


def make_job(tmp_path: Path, tables: dict[str, int], *, slow: bool = False, **extra: Any) -> Path:
    make_source(tmp_path / "src.db", tables, slow=slow)
    return write_job(tmp_path / "job.yaml", {
        "job": "served", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "full", "update_method": "overwrite"}, "tables": [{"name": t} for t in tables],
        **extra})


def runs(tmp_path: Path) -> list[dict[str, Any]]:
    """The run history straight from the state store, oldest first (fast enough to poll)."""
    db = tmp_path / ".copyjob" / "state.db"
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY started_at, run_id")]
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Served:
    """``python -m copyjob serve ...`` in the background; stderr goes to a file the test can read."""

    def __init__(self, tmp_path: Path, *args: str | Path) -> None:
        self.log = tmp_path / f"serve-{time.monotonic_ns()}.log"
        env = {**os.environ, "COPYJOB_SERVE_TICK": "0.2", "COLUMNS": "200"}
        with self.log.open("w") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-m", "copyjob", "serve", *map(str, args)], cwd=ROOT,
                                         stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        wait_until(lambda: "serving job=" in self.text() or self.proc.poll() is not None, 20, "serve to start")
        assert self.proc.poll() is None, self.text()

    def text(self) -> str:
        return self.log.read_text()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit code (within ``timeout`` seconds)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*args: str | Path) -> Served:
        started.append(Served(tmp_path, *args))
        return started[-1]

    yield start
    for s in started:
        s.kill()


def same_table(tmp_path: Path, table: str) -> None:
    got = sqlite_rows(tmp_path / "dst.db", f"SELECT id, v, n FROM {table} ORDER BY id")
    assert got == sqlite_rows(tmp_path / "src.db", f"SELECT id, v, n FROM {table}_data ORDER BY id")


def history(job: Path) -> list[dict[str, Any]]:
    result = copyjob("history", job, "--json", "--limit", "100")
    assert result.code == 0, result.output
    runs_: list[dict[str, Any]] = json.loads(result.stdout)
    return runs_


@pytest.mark.parametrize("poll", [False, True], ids=["events", "polling"])
def test_a_dropped_file_starts_a_run_within_seconds(tmp_path: Path, serve: Callable[..., Served],
                                                    poll: bool) -> None:
    (tmp_path / "inbox").mkdir()
    job = make_job(tmp_path, {"orders": 500}, triggers=[
        {"file_arrival": {"path": "./inbox", "pattern": "*.csv", "debounce": "0.3s"}}])
    served = serve(job, *(["--poll"] if poll else []))
    (tmp_path / "inbox" / "ignored.txt").write_text("not a csv\n")
    dropped = time.monotonic()
    (tmp_path / "inbox" / "a.csv").write_text("id\n1\n")
    done = wait_until(lambda: [r for r in runs(tmp_path) if r["status"] == "ok"], 10, "the triggered run")
    assert time.monotonic() - dropped < 5, served.text()
    assert done[0]["trigger"] == "trigger: file_arrival inbox/a.csv"
    assert served.stop() == 0, served.text()
    same_table(tmp_path, "orders")
    assert [r["trigger"] for r in history(job)] == ["trigger: file_arrival inbox/a.csv"]
    assert "job=served trigger='trigger: file_arrival inbox/a.csv' status=ok rows=500" in served.text()


def test_two_schedules_both_fire(tmp_path: Path, serve: Callable[..., Served]) -> None:
    job = make_job(tmp_path, {"orders": 100}, schedules=[{"every": "1s"}, {"every": "1.5s"}])
    served = serve(job)
    labels = {"schedule: every 1s", "schedule: every 1.5s"}
    wait_until(lambda: labels <= {r["trigger"] for r in runs(tmp_path) if r["status"] == "ok"}, 15,
               f"ok runs labelled {labels}")
    assert served.stop() == 0, served.text()
    status = json.loads(copyjob("status", job, "--json").stdout)
    assert [s["every"] for s in status["schedules"]] == ["1s", "1.5s"]
    assert all(s["next_run"] and s["last_fire"] for s in status["schedules"])


def test_a_schedule_firing_during_a_long_run_is_skipped(tmp_path: Path, serve: Callable[..., Served]) -> None:
    job = make_job(tmp_path, {"big": 4000}, slow=True, schedules=[{"every": "1s"}])  # a run of seconds
    served = serve(job)
    wait_until(lambda: any(r["status"] == "running" for r in runs(tmp_path)), 10, "a run to start")
    manual = copyjob("run", job, "--wait", "0")  # another process, while serve's run holds the lock
    assert manual.code == 3, manual.output
    wait_until(lambda: sum(r["status"] == "ok" for r in runs(tmp_path)) >= 2
               and any(r["status"] == "skipped" and r["trigger"] == "schedule: every 1s" for r in runs(tmp_path)),
               30, "two runs and a skipped one")
    assert served.stop() == 0, served.text()
    copied = sorted((r["started_at"], r["finished_at"]) for r in runs(tmp_path) if r["status"] != "skipped")
    for (_, finished), (next_started, _) in itertools.pairwise(copied):
        assert finished <= next_started, "two runs of one job overlapped"
    skipped = [r for r in history(job) if r["status"] == "skipped"]
    assert {r["trigger"] for r in skipped} == {"manual", "schedule: every 1s"}
    assert all("another run of this job is in progress" in r["tables"][0]["error"] for r in skipped)


def test_sigterm_mid_run_finishes_the_table_and_leaves_consistent_state(
        tmp_path: Path, serve: Callable[..., Served]) -> None:
    tables = {"t1": 1500, "t2": 1500, "t3": 1500}  # most of a second per table: SIGTERM lands inside one
    job = make_job(tmp_path, tables, slow=True, schedules=[{"every": "1s"}])
    served = serve(job)
    wait_until(lambda: any(r["status"] == "running" for r in runs(tmp_path)), 10, "a run to start")
    stopped_at = time.monotonic()
    assert served.stop(timeout=20) == 0, served.text()
    assert time.monotonic() - stopped_at < 10
    # the schedule may have fired again while the run went on: that run is skipped, and recorded after it
    last = next(r for r in history(job) if r["status"] != "skipped")
    assert last["status"] == "stopped"
    assert last["tables"][0]["status"] == "ok" and last["tables"][-1]["status"] == "skipped"
    assert all(r["status"] != "running" for r in runs(tmp_path))
    status = json.loads(copyjob("status", job, "--json").stdout)
    assert {t["last_outcome"] for t in status["tables"]} <= {"ok", None}
    rerun = copyjob("run", job)
    assert rerun.code == 0, rerun.output
    for table in tables:
        same_table(tmp_path, table)


def test_a_schedule_missed_while_serve_was_down_runs_once_at_start(
        tmp_path: Path, serve: Callable[..., Served]) -> None:
    schedule = {"cron": "0 6 * * *", "timezone": "UTC"}
    job = make_job(tmp_path, {"orders": 100}, schedules=[schedule])
    first = serve(job)  # first serve: records when it began watching, runs nothing (nothing missed)
    assert first.stop() == 0, first.text()
    assert runs(tmp_path) == []
    status = json.loads(copyjob("status", job, "--json").stdout)["schedules"][0]
    assert status["timezone"] == "UTC" and status["next_run"].endswith("T06:00:00+00:00") and not status["missed"]
    with open_state_store(f"sqlite:///{tmp_path / '.copyjob' / 'state.db'}") as store:  # "down for 3 days"
        save_last_fire(store, load_job(job).scope, ScheduleRule.of(Schedule(**schedule)),
                       datetime.now(UTC) - timedelta(days=3))
    assert json.loads(copyjob("status", job, "--json").stdout)["schedules"][0]["missed"]
    second = serve(job)
    wait_until(lambda: [r for r in runs(tmp_path) if r["status"] == "ok"], 10, "the catch-up run")
    time.sleep(1.0)  # a few more ticks: it must not run again
    assert second.stop() == 0, second.text()
    assert [(r["trigger"], r["status"]) for r in history(job)] == [("schedule: 0 6 * * * (UTC), missed", "ok")]


def test_a_folder_serves_its_job_files_only(tmp_path: Path) -> None:
    job = {"job": "j", "source": {"url": "sqlite:///a.db"}, "destination": {"url": "sqlite:///b.db"},
           "tables": [{"name": "t"}]}
    write_job(tmp_path / "one.yaml", job)
    write_job(tmp_path / "two.yml", {**job, "job": "k"})
    write_job(tmp_path / "variables.yaml", {"default": {"job": "not a job file"}})
    write_job(tmp_path / "compose.yaml", {"services": {}})
    assert find_job_files([tmp_path]) == [tmp_path / "one.yaml", tmp_path / "two.yml"]
    with pytest.raises(UsageError, match="no such job file or folder"):
        find_job_files([tmp_path / "missing"])


def test_serve_refuses_bad_input_before_serving(tmp_path: Path) -> None:
    job = make_job(tmp_path, {"orders": 10}, triggers=[{"file_arrival": {"path": "./nope"}}])
    missing = copyjob("serve", job, timeout=30)
    assert missing.code == 2 and "triggers[0].file_arrival.path: folder not found" in missing.output
    write_job(job, {"job": "idle", "source": {"url": "sqlite:///src.db"},
                    "destination": {"url": "sqlite:///dst.db"}, "tables": [{"name": "orders"}]})
    idle = copyjob("serve", tmp_path, timeout=30)
    assert idle.code == 2 and "nothing to serve" in idle.output


def test_a_bomb_or_an_oversized_file_beside_a_job_is_reported_and_skipped(tmp_path: Path,
                                                                         serve: Callable[..., Served]) -> None:
    from copyjob.yamlfile import MAX_BYTES

    make_job(tmp_path, {"orders": 10}, schedules=[{"every": "1s"}])
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("job: bomb\n" + "\n".join(levels) + "\n")
    (tmp_path / "huge.yml").write_text("job: huge\n# " + "x" * MAX_BYTES + "\n")
    served = serve(tmp_path)
    wait_until(lambda: any(r["status"] == "ok" for r in runs(tmp_path)), 60, "a run of the good job")
    log = served.text()
    assert f"skipping {tmp_path / 'bomb.yaml'}: {tmp_path / 'bomb.yaml'}:" in log and "alias bomb" in log, log
    assert f"skipping {tmp_path / 'huge.yml'}: {tmp_path / 'huge.yml'}: larger than 8 MiB" in log, log
    assert served.stop() == 0
