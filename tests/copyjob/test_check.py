"""``copyjob check`` alerts on every mode: a failed last run (per table), no success within ``check.max_age``,
and (for CDC) lag and lost slots; one line per problem and exit 1, or ``--json``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import copyjob, sqlite_script, write_job

pytestmark = pytest.mark.timeout(120)


def pg_job(tmp_path: Path, url: str, **extra: Any) -> Path:
    return write_job(tmp_path / "job.yaml", {
        "job": "watched", "source": {"url": url}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "full", "update_method": "overwrite"}, "tables": [{"name": "orders"}], **extra})


def problems(job: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    result = copyjob("check", job, "--json", *args)
    assert result.code in (0, 1), result.output
    listed: list[dict[str, Any]] = json.loads(result.stdout)
    return result.code, listed


def test_check_fails_after_a_failed_run_and_passes_after_a_good_one(
        tmp_path: Path, postgres_server: Any, pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    postgres_server.psql(database, "CREATE TABLE orders (id int PRIMARY KEY, note text); "
                                   "INSERT INTO orders VALUES (1, 'a'), (2, 'b')")
    user, rest = pg_url.removeprefix("postgresql://").split("@", 1)
    wrong = f"postgresql://{user.split(':')[0]}:not-the-password@{rest}"
    job = pg_job(tmp_path, wrong)
    assert copyjob("run", job).code == 1

    result = copyjob("check", job)
    assert result.code == 1, result.output
    line = result.stdout.strip()
    assert len(line.splitlines()) == 1, result.output
    assert line.startswith("failed: watched.orders: run ") and "password" in line, line
    assert "not-the-password" not in result.output
    code, listed = problems(job)
    assert code == 1
    assert [(p["kind"], p["table"]) for p in listed] == [("failed", "orders")]

    pg_job(tmp_path, pg_url)
    assert copyjob("run", job).code == 0
    result = copyjob("check", job)
    assert result.code == 0, result.output
    assert problems(job) == (0, [])


def sqlite_job(tmp_path: Path, **extra: Any) -> Path:
    sqlite_script(tmp_path / "src.db", "CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT);"
                                       "INSERT INTO orders VALUES (1, 'a'), (2, 'b');"
                                       "CREATE TABLE items (id INTEGER PRIMARY KEY);")
    return write_job(tmp_path / "job.yaml", {
        "job": "aged", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "full", "update_method": "overwrite"}, **extra})


def age_successes(tmp_path: Path, hours: float) -> None:
    """Move every recorded run ``hours`` into the past, as if the job had not succeeded since."""
    con = sqlite3.connect(tmp_path / ".copyjob" / "state.db")
    try:
        for column in ("started_at", "finished_at"):
            rows = con.execute(f"SELECT run_id, {column} FROM runs").fetchall()
            for run_id, value in rows:
                con.execute(f"UPDATE runs SET {column} = datetime(?, ?) WHERE run_id = ?",
                            (value, f"-{hours} hours", run_id))
        con.commit()
    finally:
        con.close()


def test_max_age_of_the_job_and_of_a_table(tmp_path: Path) -> None:
    job = sqlite_job(tmp_path, check={"max_age": "26h"},
                     tables=[{"name": "orders"}, {"name": "items", "check": {"max_age": "1h"}}])
    assert copyjob("check", job).code == 1  # never run: no success within max_age
    assert copyjob("run", job).code == 0
    assert problems(job) == (0, [])

    age_successes(tmp_path, 2)
    code, listed = problems(job)
    assert code == 1
    assert [(p["kind"], p["table"]) for p in listed] == [("stale", "items")]
    assert "max_age 1h" in listed[0]["message"]
    result = copyjob("check", job)
    assert result.code == 1 and result.stdout.count("\n") == 1, result.output
    assert result.stdout.startswith("stale: aged.items: last successful run "), result.output

    age_successes(tmp_path, 25)  # 27 hours ago: older than the job's 26h too
    code, listed = problems(job)
    assert [(p["kind"], p["table"]) for p in listed] == [("stale", "orders"), ("stale", "items")]
    code, listed = problems(job, "--max-age", "30h")  # the flag replaces the job file's thresholds
    assert (code, listed) == (0, [])
    assert copyjob("check", job, "--max-age", "soon").code == 2

    assert copyjob("run", job).code == 0
    assert problems(job) == (0, [])


def test_a_bad_max_age_is_a_job_file_error(tmp_path: Path) -> None:
    job = sqlite_job(tmp_path, check={"max_age": "yesterday"}, tables=[{"name": "orders"}])
    result = copyjob("validate", job)
    assert result.code == 2
    assert "check.max_age" in result.output or "max_age" in result.output, result.output
