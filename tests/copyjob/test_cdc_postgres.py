"""mode: cdc from PostgreSQL to PostgreSQL through the real CLI: the snapshot handoff under a concurrent writer,
crashes (SIGKILL) at several points, and each kind of change; the destination is compared with the source
table by table, row by row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import ROOT, CliResult, copyjob, write_job
from tests.pg_cdc import concurrent_writer, drop_slots, execute, rows, table_fingerprint


@pytest.fixture(autouse=True)
def _slots(pg_url: str) -> Iterator[None]:
    yield
    drop_slots(pg_url)


def job_file(tmp_path: Path, src: str, dst: str, tables: list[dict[str, Any]], **copy: Any) -> Path:
    cdc = copy.pop("cdc", {})
    return write_job(tmp_path / "job.yaml", {
        "job": "cdc_" + src.rsplit("/", 1)[1], "source": {"url": src}, "destination": {"url": dst},
        "copy": {"mode": "cdc", "update_method": "merge", **copy}, "cdc": {"max_batch_delay": "50ms", **cdc},
        "tables": tables})


def run(job: Path, *extra: str, env: dict[str, str] | None = None) -> CliResult:
    result = copyjob("run", job, "--no-progress", *extra, env=env)
    return result


def ok(job: Path) -> None:
    result = run(job)
    assert result.code == 0, result.output


def equal(src: str, dst: str, table: str = "orders", columns: str = "*") -> None:
    assert table_fingerprint(dst, table, columns) == table_fingerprint(src, table, columns)


def history(job: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(copyjob("history", job, "--json").stdout)
    return out


@pytest.fixture
def shop(pg_url: str) -> str:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2), "
            "note text, updated timestamptz DEFAULT now())",
            "INSERT INTO orders (id, status, amount) SELECT g, 'new', g * 1.5 FROM generate_series(1, 2000) g")
    return pg_url


# ---------------------------------------------------------------- handoff


def test_snapshot_under_a_concurrent_writer_then_stream(tmp_path: Path, shop: str, pg_url2: str) -> None:
    execute(shop, "INSERT INTO orders (id, status, amount) SELECT g, 'bulk', g FROM generate_series(2001, 150000) g")
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}], parallel=3)
    with concurrent_writer(shop, keys=150_000) as writes:
        first = run(job)  # snapshot (parallel readers on one exported snapshot), then the changes meanwhile
    assert first.code == 0, first.output
    assert writes() > 20
    ok(job)  # what the writer committed after the first run began streaming
    equal(shop, pg_url2)
    runs = history(job)
    assert [t["mode"] for r in runs for t in r["tables"]] == ["cdc", "cdc"]
    assert runs[1]["tables"][0]["rows_read"] >= 150_000 - writes()


# ---------------------------------------------------------------- kinds of change


def test_inserts_updates_deletes_in_multi_row_transactions(tmp_path: Path, shop: str, pg_url2: str) -> None:
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}])
    ok(job)
    execute(shop, "BEGIN", "INSERT INTO orders (id, status) SELECT g, 'txn' FROM generate_series(3001, 3500) g",
            "UPDATE orders SET status = 'paid' WHERE id <= 100", "DELETE FROM orders WHERE id BETWEEN 101 AND 150",
            "UPDATE orders SET id = id + 10000 WHERE id BETWEEN 151 AND 160", "COMMIT",
            "UPDATE orders SET note = 'later' WHERE id = 3001")
    ok(job)
    equal(shop, pg_url2)
    assert rows(pg_url2, "SELECT count(*) FROM orders WHERE id BETWEEN 151 AND 160") == [(0,)]


def test_runs_of_inserts_are_merged_column_wise(tmp_path: Path, shop: str, pg_url2: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: the stream's runs of inserts reach the destination as Arrow columns (the capture is asked for
    them by the destination sink), a run with an update in its chunk as folded events; both end equal."""
    from copyjob.apply import changes as apply_changes
    from copyjob.offsets import default_state_url, open_state_store

    from copyjob.loader import load_job
    from copyjob.progress import Progress
    from copyjob.runner import JobRun

    merged: list[bool] = []
    original = apply_changes.inserts_as_target

    def spy(*args: Any) -> Any:
        result = original(*args)
        merged.append(result is not None)
        return result

    monkeypatch.setattr(apply_changes, "inserts_as_target", spy)

    def run_in_process(job: Path) -> None:
        loaded = load_job(job)
        job_run = JobRun(loaded, lambda: open_state_store(default_state_url(loaded.path)), Progress(live=False))
        try:
            assert job_run.run().status == "ok"
        finally:
            job_run.close()

    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}], cdc={"max_batch_delay": "5s"})
    run_in_process(job)  # the snapshot
    execute(shop, "INSERT INTO orders (id, status, amount) SELECT g, 'new', g FROM generate_series(3001, 4000) g")
    run_in_process(job)
    assert merged and all(merged)
    merged.clear()
    execute(shop, "BEGIN", "INSERT INTO orders (id, status) VALUES (5001, 'a'), (5002, 'b')",
            "UPDATE orders SET status = 'paid' WHERE id = 5001", "COMMIT")
    run_in_process(job)
    assert not merged  # an update in the chunk: the table's changes came as events, folded
    equal(shop, pg_url2)


def test_updates_with_and_without_replica_identity_full(tmp_path: Path, shop: str, pg_url2: str) -> None:
    execute(shop, "CREATE TABLE full_id (id int PRIMARY KEY, v text)", "ALTER TABLE full_id REPLICA IDENTITY FULL",
            "INSERT INTO full_id SELECT g, 'a' FROM generate_series(1, 10) g")
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}, {"name": "full_id"}], update_method="append")
    ok(job)
    execute(shop, "UPDATE orders SET status = 'x' WHERE id = 1", "UPDATE full_id SET v = 'b' WHERE id = 1",
            "UPDATE full_id SET id = 100 WHERE id = 2")
    ok(job)
    changes = rows(pg_url2, "SELECT id, v, _op FROM full_id WHERE _op <> 'r' ORDER BY _position, _op DESC")
    assert changes == [(1, "b", "u"), (2, "a", "d"), (100, "a", "c")]
    assert rows(pg_url2, "SELECT id, status, _op FROM orders WHERE _op <> 'r'") == [(1, "x", "u")]
    assert rows(pg_url2, "SELECT count(*), count(_commit_ts), count(DISTINCT _position) FROM full_id "
                         "WHERE _op <> 'r'") == [(3, 3, 2)]


def test_truncate_under_merge_and_under_append(tmp_path: Path, shop: str, pg_url2: str) -> None:
    execute(shop, "CREATE TABLE log (id int PRIMARY KEY, v text)", "INSERT INTO log VALUES (1, 'a'), (2, 'b')")
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}, {"name": "log", "update_method": "append"}])
    ok(job)
    execute(shop, "BEGIN", "TRUNCATE orders, log", "INSERT INTO orders (id, status) VALUES (1, 'after')",
            "COMMIT")
    ok(job)
    equal(shop, pg_url2)  # merge: the destination was emptied, then got the new row
    assert rows(pg_url2, "SELECT id, v, _op FROM log ORDER BY _position NULLS FIRST, id") == [
        (1, "a", "r"), (2, "b", "r"), (None, None, "t")]  # append: the truncate is recorded


def test_unchanged_toast_keeps_the_destination_value(tmp_path: Path, shop: str, pg_url2: str) -> None:
    execute(shop, "ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL",
            "UPDATE orders SET note = repeat(md5(id::text), 200) WHERE id <= 5")
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}])
    ok(job)
    execute(shop, "UPDATE orders SET status = 'toast kept' WHERE id <= 3",
            "BEGIN", "UPDATE orders SET status = 'twice' WHERE id = 4", "UPDATE orders SET amount = 0 WHERE id = 4",
            "COMMIT")
    ok(job)
    equal(shop, pg_url2)
    assert rows(pg_url2, "SELECT count(*) FROM orders WHERE length(note) = 6400") == [(5,)]


def test_columns_added_and_dropped_mid_stream(tmp_path: Path, shop: str, pg_url2: str) -> None:
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}])
    ok(job)
    execute(shop, "UPDATE orders SET status = 'before' WHERE id = 1", "ALTER TABLE orders ADD COLUMN tag text",
            "UPDATE orders SET tag = 'new column', status = 'after' WHERE id = 2",
            "ALTER TABLE orders DROP COLUMN note", "UPDATE orders SET status = 'dropped' WHERE id = 3")
    ok(job)
    cols = "id, status, amount, tag"
    equal(shop, pg_url2, columns=cols)
    assert rows(pg_url2, "SELECT tag FROM orders WHERE id = 2") == [("new column",)]


def test_a_column_added_while_stopped_reaches_the_destination(tmp_path: Path, shop: str, pg_url2: str) -> None:
    """The next run reflects the source with the column already there: its first change must still widen the
    destination table (the run's reflection is not what the destination holds)."""
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}])
    ok(job)
    execute(shop, "ALTER TABLE orders ADD COLUMN big bigint", "UPDATE orders SET big = id * 1000 WHERE id <= 5",
            "INSERT INTO orders (id, status, big) VALUES (5001, 'late', 7)")
    ok(job)
    equal(shop, pg_url2, columns="id, status, amount, big")
    assert rows(pg_url2, "SELECT big FROM orders WHERE id = 5001") == [(7,)]


# ---------------------------------------------------------------- crashes


def kill_run(job: Path, fault: str) -> None:
    """``copyjob run`` killed (SIGKILL) by its own fault hook at ``fault``."""
    result = run(job, env={"COPYJOB_FAULT": fault})
    assert result.code == -signal.SIGKILL, result.output


def test_killed_mid_snapshot(tmp_path: Path, shop: str, pg_url2: str) -> None:
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}], batch_rows=500)
    kill_run(job, "snapshot-batch:2")
    execute(shop, "UPDATE orders SET status = 'after crash' WHERE id <= 10", "DELETE FROM orders WHERE id = 20")
    ok(job)  # the slot exists, no table has a snapshot: a new snapshot at a new point
    equal(shop, pg_url2)


@pytest.mark.parametrize("fault", ["applied:3", "applied:1"])
def test_killed_mid_transaction_or_before_confirming(tmp_path: Path, shop: str, pg_url2: str, fault: str) -> None:
    """applied:3 dies inside a 1,000-row transaction (chunks of 100 events), applied:1 after the first commit
    and before the position is confirmed to PostgreSQL; under append nothing may appear twice."""
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}], update_method="append",
                   cdc={"batch_events": 100})
    ok(job)
    execute(shop, "INSERT INTO orders (id, status) SELECT g, 'big' FROM generate_series(5001, 6000) g",
            "UPDATE orders SET status = 'small' WHERE id = 1")
    kill_run(job, fault)
    ok(job)
    assert rows(pg_url2, "SELECT count(*), count(DISTINCT id) FROM orders WHERE _op = 'c'") == [(1000, 1000)]
    assert rows(pg_url2, "SELECT count(*) FROM orders WHERE _op = 'u'") == [(1,)]
    assert rows(pg_url2, "SELECT count(*) FROM orders WHERE _op = 'r'") == [(2000,)]


def test_stream_killed_and_restarted_under_load(tmp_path: Path, shop: str, pg_url2: str) -> None:
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}], cdc={"batch_events": 200})
    ok(job)
    env = {**os.environ, "COLUMNS": "200"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(job)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    stream = start()
    try:
        with psycopg.connect(shop, autocommit=True) as conn:
            for i in range(60):
                with conn.transaction():
                    conn.execute("INSERT INTO orders (id, status) SELECT g, 'streamed' "
                                 "FROM generate_series(%s::int, %s::int) g", (10_000 + i * 100, 10_000 + i * 100 + 99))
                    conn.execute("UPDATE orders SET amount = amount + 1 WHERE id = %s", (i + 1,))
                if i == 30:
                    time.sleep(1.0)
                    stream.send_signal(signal.SIGKILL)
                    stream.wait(timeout=30)
                    stream = start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if rows(pg_url2, "SELECT count(*) FROM orders")[0][0] == rows(shop, "SELECT count(*) FROM orders")[0][0]:
                break
            time.sleep(0.3)
    finally:
        stream.send_signal(signal.SIGTERM)
        out, _ = stream.communicate(timeout=60)
    assert stream.returncode == 0, out
    equal(shop, pg_url2)


# ---------------------------------------------------------------- tables over time


def test_table_added_later_while_the_others_stream(tmp_path: Path, shop: str, pg_url2: str) -> None:
    execute(shop, "CREATE TABLE items (id int PRIMARY KEY, name text)",
            "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50000) g")
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}])
    ok(job)
    execute(shop, "UPDATE orders SET status = 'while items was not in the job' WHERE id <= 5",
            "UPDATE items SET name = 'before its snapshot' WHERE id <= 5")
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}, {"name": "items"}])
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(shop, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                conn.execute("UPDATE items SET name = 'during' WHERE id = %s", (i % 50000 + 1,))
                conn.execute("UPDATE orders SET amount = %s WHERE id = %s", (i, i % 2000 + 1))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        second = run(job)
    finally:
        stop.set()
        thread.join()
    assert second.code == 0, second.output
    ok(job)
    equal(shop, pg_url2)
    equal(shop, pg_url2, "items")


def test_reset_snapshots_again_and_streams_on(tmp_path: Path, shop: str, pg_url2: str) -> None:
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}])
    ok(job)
    execute(pg_url2, "DELETE FROM orders WHERE id <= 100")  # the destination drifted
    assert copyjob("reset", job).code == 0
    status = json.loads(copyjob("status", job, "--json").stdout)
    assert status["tables"][0]["next_run"] == "snapshot"
    execute(shop, "UPDATE orders SET status = 'after reset' WHERE id = 1000")
    ok(job)
    execute(shop, "UPDATE orders SET status = 'streamed' WHERE id = 1001")
    ok(job)
    equal(shop, pg_url2)
    assert json.loads(copyjob("status", job, "--json").stdout)["tables"][0]["next_run"] == "stream"


# ---------------------------------------------------------------- operations


def test_status_check_and_drop(tmp_path: Path, shop: str, pg_url2: str) -> None:
    job = job_file(tmp_path, shop, pg_url2, [{"name": "orders"}], cdc={"max_lag_bytes": 300_000})
    ok(job)
    checked = copyjob("check", job)
    assert checked.code == 0, checked.output
    execute(shop, "UPDATE orders SET note = repeat('x', 500)")  # ~1 MB of WAL the slot keeps until the next run
    status = json.loads(copyjob("status", job, "--json").stdout)["cdc"]
    assert status["slot"] == "copyjob_cdc_" + shop.rsplit("/", 1)[1] and status["exists"]
    assert status["lag_bytes"] > 300_000 and status["lag_seconds"] is not None and status["warnings"]
    lagging = copyjob("check", job)
    assert lagging.code == 1 and "above max_lag_bytes" in lagging.output
    ok(job)
    ok(job)  # source and destination share the test server: the first run's writes are WAL the slot passes next
    assert copyjob("check", job).code == 0
    asked = copyjob("drop", job)
    assert asked.code == 2 and "--yes" in asked.output
    dropped = copyjob("drop", job, "--yes")
    assert dropped.code == 0 and "replication slot" in dropped.output and "publication" in dropped.output
    assert rows(shop, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()") == [(0,)]
    assert rows(shop, "SELECT count(*) FROM pg_publication") == [(0,)]
    ok(job)  # a new slot and publication, and a new snapshot
    equal(shop, pg_url2)


def test_cdc_needs_a_log_based_source(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", {"job": "j", "source": {"url": "sqlite:///x.db"},
                                            "destination": {"url": "duckdb:///y.duckdb"},
                                            "copy": {"mode": "cdc"}, "tables": [{"name": "t"}]})
    result = copyjob("validate", job)
    assert result.code == 2 and "cdc needs a postgresql, mysql/mariadb or kafka source" in result.output
