"""The command line as a new user meets it: --version, --help (what copyjob does, an example per command, flags
shown as flags, no heavy imports), status and history from the state alone, the unresolved-variable message,
one naming style for tables, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from copyjob import __version__
from tests.copyjob.test_serve import make_job, runs, wait_until
from tests.helpers import ROOT, copyjob, sqlite_exec, write_job

pytestmark = pytest.mark.timeout(300)

COMMANDS = ("run", "serve", "validate", "status", "history", "reset", "demo", "drop", "stream", "capture",
            "apply", "tail", "replay", "maintain")
HEAVY = ("pyarrow", "confluent_kafka", "psycopg", "pymysql", "duckdb", "sqlalchemy", "pydantic", "boto3")


def test_version() -> None:
    result = copyjob("--version")
    assert result.code == 0, result.output
    assert result.stdout.strip() == f"copyjob {__version__}"


def test_help_says_what_copyjob_does_and_offers_completion() -> None:
    result = copyjob("--help")
    assert result.code == 0, result.output
    for words in ("incremental", "cdc", "MySQL/MariaDB", "S3", "Kafka", "--install-completion", "--version",
                  "copyjob run job.yaml"):
        assert words in result.stdout, words


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_shows_an_example_and_flags_as_flags(command: str) -> None:
    result = copyjob(command, "--help")
    assert result.code == 0, result.output
    assert "Examples" in result.stdout and f"copyjob {command} " in result.stdout, result.stdout
    assert "<bool>" not in result.stdout, result.stdout
    assert "--progress" not in result.stdout  # run: a --no-progress flag, not a --progress / --no-progress pair


def test_help_imports_no_heavy_library() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "copyjob", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & set(HEAVY), imported & set(HEAVY)


def deploy(tmp_path: Path) -> Path:
    """A SQLite job whose destination comes from variables.yaml's dev and prod sets only; one row renamed."""
    sqlite_exec(tmp_path / "src.db", "CREATE TABLE items (id INTEGER PRIMARY KEY, ts INTEGER)")
    sqlite_exec(tmp_path / "src.db", "INSERT INTO items VALUES (?, ?)", [(i, i * 10) for i in range(1, 51)])
    (tmp_path / "variables.yaml").write_text(yaml.safe_dump(
        {env: {"DST": f"sqlite:///{env}.db"} for env in ("dev", "prod")}))
    return write_job(tmp_path / "job.yaml", {
        "job": "shop", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "${DST}"},
        "tables": [{"name": "items", "target": "items_copy", "mode": "incremental", "incremental_column": "ts",
                    "key": ["id"]}]})


def test_an_unresolved_variable_names_the_environments_that_define_it(tmp_path: Path) -> None:
    job = deploy(tmp_path)
    result = copyjob("run", job, "--no-progress")
    assert result.code == 2, result.output
    assert "unresolved variable ${DST}" in result.stderr
    assert "defined for --env dev, --env prod" in result.stderr, result.stderr


def test_status_and_history_work_from_the_state_alone(tmp_path: Path) -> None:
    job = deploy(tmp_path)
    for env in ("dev", "prod"):
        assert copyjob("run", job, "--env", env, "--no-progress").code == 0
    sqlite_exec(tmp_path / "src.db", "INSERT INTO items VALUES (51, 510)")
    assert copyjob("run", job, "--env", "dev", "--no-progress").code == 0

    status = copyjob("status", job)  # no --env: ${DST} cannot be resolved; the state can still be read
    assert status.code == 0, status.output
    assert "under every destination" in status.stderr
    flat = "".join(status.stdout.split())  # titles wrap on long paths
    for env in ("dev", "prod"):
        assert f"intosqlite://{tmp_path}/{env}.db" in flat, status.stdout
    assert "full" not in status.stdout  # the mode of the job file, not of the first run
    assert status.stdout.count("items → items_copy") == 2, status.stdout
    assert "510" in status.stdout and "500" in status.stdout  # each destination's own watermark

    listed = json.loads(copyjob("status", job, "--json").stdout)
    watermarks = {d["destination"]: d["tables"][0]["watermark"] for d in listed["destinations"]}
    assert watermarks == {f"sqlite://{tmp_path}/dev.db": 510, f"sqlite://{tmp_path}/prod.db": 500}

    history = copyjob("history", job)
    assert history.code == 0, history.output
    assert "rows/s" in history.stdout and "500 → 510" in history.stdout, history.stdout
    assert "items → items_copy" in history.stdout
    assert len(json.loads(copyjob("history", job, "--json").stdout)) == 3

    # with --env the destination resolves: its one state, as before
    dev = copyjob("status", job, "--env", "dev")
    assert dev.code == 0 and "510" in dev.stdout and "prod.db" not in dev.stdout, dev.output


def test_status_still_refuses_an_unresolved_job_name(tmp_path: Path) -> None:
    job = deploy(tmp_path)
    job.write_text(job.read_text().replace("job: shop", "job: ${NAME}"))
    result = copyjob("status", job)
    assert result.code == 2 and "${NAME}" in result.stderr, result.output


def test_the_run_summary_names_source_and_target(tmp_path: Path) -> None:
    job = deploy(tmp_path)
    result = copyjob("run", job, "--env", "dev", "--no-progress")
    assert result.code == 0, result.output
    assert "items → items_copy" in result.stdout, result.stdout


def test_ctrl_c_stops_a_run_at_once_and_quietly(tmp_path: Path) -> None:
    job = make_job(tmp_path, {"big": 200_000}, slow=True)  # minutes to read: the signal always comes first
    proc = subprocess.Popen([sys.executable, "-m", "copyjob", "run", str(job), "--no-progress"], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        wait_until(lambda: any(r["status"] == "running" for r in runs(tmp_path)), 120, "the run to start")
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    print(f"stopped {took:.1f} s after SIGINT")  # reported, not asserted: the run alone would take minutes
    for noise in ("Traceback", "Warning", "Exception ignored"):
        assert noise not in stderr, stderr


def test_ctrl_c_stops_a_cdc_stream_within_seconds_and_quietly(tmp_path: Path, pg_url: str) -> None:
    from tests.pg_cdc import drop_slots, execute

    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL)",
            "INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 500) g")
    job = write_job(tmp_path / "job.yaml", {
        "job": "cli_stream", "source": {"url": pg_url}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "cdc", "update_method": "merge"}, "cdc": {"max_batch_delay": "50ms"},
        "tables": [{"name": "orders"}]})
    proc = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(job)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})
    try:
        execute(pg_url, "INSERT INTO orders VALUES (501, 'streamed')")
        wait_until(lambda: _count(tmp_path / "dst.db", "SELECT count(*) FROM orders WHERE id = 501"), 120,
                   "the stream to apply a change")
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        drop_slots(pg_url)
    assert proc.returncode == 0, stderr  # the first Ctrl-C stops the stream cleanly (a second one: 130)
    print(f"stopped {took:.1f} s after SIGINT")  # 0.5 s on an idle machine; a stream alone never ends
    for noise in ("Traceback", "Warning", "Exception ignored"):
        assert noise not in stderr, stderr


def _count(db: Path, sql: str) -> int:
    import sqlite3

    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        return int(con.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        con.close()
