"""mode: cdc with transport: kafka, PostgreSQL → Kafka → PostgreSQL through the real CLI and the session's real
broker: the snapshot and the stream under a concurrent writer, a capture killed (SIGKILL) after the broker
acknowledged its events but before it saved its position, and ``copyjob stream``. The destination is compared
with the source row by row."""

from __future__ import annotations

import itertools
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

from tests.helpers import ROOT, copyjob, write_job
from tests.pg_cdc import concurrent_writer, drop_slots, execute, rows, table_fingerprint
from tests.services.kafka import KafkaBroker
from tests.services.mariadb import MariadbServer

_ids = itertools.count()


@pytest.fixture(autouse=True)
def _slots(pg_url: str) -> Iterator[None]:
    yield
    drop_slots(pg_url)


@pytest.fixture
def shop(pg_url: str) -> str:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2), "
            "note text, updated timestamptz DEFAULT now())",
            "INSERT INTO orders (id, status, amount) SELECT g, 'new', g * 1.5 FROM generate_series(1, 2000) g")
    return pg_url


def job_file(tmp_path: Path, broker: KafkaBroker, src: str, dst: str, kafka: dict[str, Any] | None = None,
             **cdc: Any) -> tuple[Path, str]:
    n = next(_ids)
    prefix = f"cdc{os.getpid()}x{n}"
    job = {"job": f"cdck{n}_" + src.rsplit("/", 1)[1], "source": {"url": src}, "destination": {"url": dst},
           "copy": {"mode": "cdc", "update_method": "merge"}, "cdc": {"max_batch_delay": "50ms", **cdc},
           "tables": [{"name": "orders"}], "transport": "kafka",
           "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": prefix, **(kafka or {})}}
    return write_job(tmp_path / f"job{n}.yaml", job), prefix


def ok(*args: str | Path, env: dict[str, str] | None = None) -> str:
    result = copyjob(*args, "--no-progress", env=env) if args[0] == "run" else copyjob(*args, env=env)
    assert result.code == 0, result.output
    return result.stdout


def equal(src: str, dst: str) -> None:
    assert table_fingerprint(dst, "orders") == table_fingerprint(src, "orders")


def changes(src: str, start: int) -> None:
    """Inserts, updates (one changes the key) and deletes, some in one transaction."""
    execute(src, "BEGIN",
            f"INSERT INTO orders (id, status) SELECT g, 'txn' FROM generate_series({start}, {start + 299}) g",
            "UPDATE orders SET status = 'paid', amount = amount + 1 WHERE id % 50 = 0",
            f"DELETE FROM orders WHERE id BETWEEN {start + 10} AND {start + 19} OR id % 97 = 0", "COMMIT",
            f"UPDATE orders SET id = id + 100000 WHERE id = {start + 1}",
            f"UPDATE orders SET note = 'later' WHERE id = {start + 2}")


def test_snapshot_and_changes_under_a_concurrent_writer(tmp_path: Path, kafka_broker: KafkaBroker, shop: str,
                                                        pg_url2: str) -> None:
    job, _ = job_file(tmp_path, kafka_broker, shop, pg_url2)
    with concurrent_writer(shop, keys=2000, pause_s=0.005) as writes:
        ok("run", job)  # snapshot (op r), the changes committed meanwhile (c/u/d), then applied
        changes(shop, 5001)
        ok("run", job)
    assert writes() > 10
    ok("run", job)  # what the writer committed after the second run began
    equal(shop, pg_url2)
    events = [json.loads(line) for line in ok("tail", job, "--from-beginning", "--idle-timeout", "3").splitlines()]
    assert {e["op"] for e in events} >= {"r", "c", "u", "d"}
    moved = [e for e in events if e["op"] == "d" and e["key"] == {"id": 5002}]
    assert moved and moved[0]["before"]["id"] == 5002  # a key change: a delete of the old key, then an insert
    runs = json.loads(copyjob("history", job, "--json").stdout)
    assert [t["mode"] for r in runs for t in r["tables"]] == ["cdc"] * 3
    assert all(r["status"] == "ok" for r in runs)


def test_capture_killed_after_the_broker_ack_before_saving_the_position(
        tmp_path: Path, kafka_broker: KafkaBroker, shop: str, pg_url2: str) -> None:
    # about 380 changes in chunks of 50: more than the 4 chunks one commit takes when the capture fell behind, so
    # a second commit comes however fast the reader is
    job, _ = job_file(tmp_path, kafka_broker, shop, pg_url2, batch_events=50)
    ok("run", job)
    changes(shop, 5001)
    killed = copyjob("capture", job, env={"COPYJOB_FAULT": "committed:2"})
    assert killed.code == -signal.SIGKILL, killed.output
    status = json.loads(copyjob("status", job, "--json").stdout)
    assert status["tables"][0]["next_run"] == "stream"
    execute(shop, "UPDATE orders SET status = 'after the crash' WHERE id <= 20", "DELETE FROM orders WHERE id = 30")
    ok("run", job)  # the changes since the saved position are published again; merge applies them idempotently
    equal(shop, pg_url2)
    ok("apply", job, "--until-caught-up")  # the apply side alone: nothing left to do
    equal(shop, pg_url2)


def test_unchanged_toast_keeps_the_destination_value(tmp_path: Path, kafka_broker: KafkaBroker, shop: str,
                                                     pg_url2: str) -> None:
    execute(shop, "ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL",
            "UPDATE orders SET note = repeat(md5(id::text), 200) WHERE id <= 5")
    job, _ = job_file(tmp_path, kafka_broker, shop, pg_url2)
    ok("run", job)
    execute(shop, "UPDATE orders SET status = 'toast kept' WHERE id <= 3")  # the notes are not logged
    ok("run", job)
    equal(shop, pg_url2)
    assert rows(pg_url2, "SELECT count(*) FROM orders WHERE length(note) = 6400") == [(5,)]


def test_truncate_on_one_partition_and_refused_on_several(tmp_path: Path, kafka_broker: KafkaBroker, shop: str,
                                                          pg_url2: str) -> None:
    one, _ = job_file(tmp_path, kafka_broker, shop, pg_url2, kafka={"partitions": 1})
    several, _ = job_file(tmp_path, kafka_broker, shop, pg_url2)
    ok("run", one)
    ok("run", several)
    execute(shop, "BEGIN", "TRUNCATE orders", "INSERT INTO orders (id, status) VALUES (1, 'after')", "COMMIT")
    ok("run", one)
    equal(shop, pg_url2)
    refused = copyjob("run", several)
    assert refused.code == 1 and "TRUNCATE" in refused.output and "reset" in refused.output, refused.output


def test_stream_until_sigterm(tmp_path: Path, kafka_broker: KafkaBroker, shop: str, pg_url2: str) -> None:
    job, _ = job_file(tmp_path, kafka_broker, shop, pg_url2)
    proc = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(job)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "200", "COPYJOB_KAFKA_CHILD": "1"})  # apply in a child
    try:
        changes(shop, 5001)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                if table_fingerprint(pg_url2, "orders") == table_fingerprint(shop, "orders"):
                    break
            except psycopg.Error:
                pass
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, errors = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + errors
    equal(shop, pg_url2)
    assert rows(pg_url2, "SELECT count(*) FROM orders WHERE id = 105002") == [(1,)]


def test_mariadb_binlog_through_kafka(tmp_path: Path, kafka_broker: KafkaBroker, mariadb_server: MariadbServer,
                                      mariadb_url: str, pg_url2: str) -> None:
    pytest.importorskip("pymysqlreplication")
    db = mariadb_url.rsplit("/", 1)[1]
    mariadb_server.execute("CREATE TABLE orders (id INT PRIMARY KEY, status VARCHAR(20) NOT NULL, "
                           "amount DECIMAL(10,2)) ENGINE=InnoDB", db)
    mariadb_server.execute("INSERT INTO orders VALUES " + ",".join(f"({i}, 'new', {i}.5)" for i in range(1, 501)),
                           db)
    job, _ = job_file(tmp_path, kafka_broker, mariadb_url, pg_url2)
    ok("run", job)
    for sql in ("INSERT INTO orders VALUES (1000, 'c', 1)", "UPDATE orders SET status = 'u' WHERE id <= 10",
                "DELETE FROM orders WHERE id BETWEEN 11 AND 20", "UPDATE orders SET id = 2000 WHERE id = 30"):
        mariadb_server.execute(sql, db)
    ok("run", job)
    source = [(i, s, str(a)) for i, s, a in mariadb_server.execute("SELECT * FROM orders ORDER BY id", db)]
    assert [(i, s, str(a)) for i, s, a in table_fingerprint(pg_url2, "orders")] == source


def many_changes(src: str, start: int, transactions: int = 30) -> None:
    """Inserts in 100-row transactions, then updates and deletes across them: several capture chunks."""
    for i in range(transactions):
        first = start + 100 * i
        execute(src, f"INSERT INTO orders (id, status) SELECT g, 'bulk' FROM generate_series({first}, "
                f"{first + 99}) g")
    changes(src, start + 100 * transactions)
    execute(src, f"UPDATE orders SET status = 'bulk updated' WHERE id BETWEEN {start} AND {start + 500}",
            f"DELETE FROM orders WHERE id BETWEEN {start + 1000} AND {start + 1100}")


def test_run_applies_while_the_capture_still_runs(tmp_path: Path, kafka_broker: KafkaBroker, shop: str,
                                                  pg_url2: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``copyjob run`` applies the first chunk the capture published while the capture is still publishing:
    the capture's second flush waits until the destination holds a change of the first one."""
    from copyjob.connectors.kafka.transport import KafkaPublisher
    from copyjob.offsets import default_state_url, open_state_store

    from copyjob.loader import load_job
    from copyjob.progress import Progress
    from copyjob.runner import JobRun

    job, _ = job_file(tmp_path, kafka_broker, shop, pg_url2, batch_events=100)
    ok("run", job)
    many_changes(shop, 10_000)
    flushes: list[bool] = []
    real_flush = KafkaPublisher.flush

    def flush(self: KafkaPublisher) -> None:
        real_flush(self)
        if threading.current_thread().name in ("MainThread", "apply-writer") or flushes:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not rows(pg_url2, "SELECT count(*) FROM orders WHERE id >= 10000")[0][0]:
            time.sleep(0.1)
        flushes.append(bool(rows(pg_url2, "SELECT count(*) FROM orders WHERE id >= 10000")[0][0]))

    monkeypatch.setattr(KafkaPublisher, "flush", flush)
    loaded = load_job(job)
    job_run = JobRun(loaded, lambda: open_state_store(default_state_url(loaded.path)), Progress(live=False))
    try:
        record = job_run.run()
    finally:
        job_run.close()
    assert record.status == "ok", record
    assert flushes == [True]  # the apply wrote while the capture waited
    equal(shop, pg_url2)


@pytest.mark.parametrize("fault", ["committed:3", None])
def test_run_killed_while_capture_and_apply_run_side_by_side(tmp_path: Path, kafka_broker: KafkaBroker, shop: str,
                                                             pg_url2: str, fault: str | None) -> None:
    """SIGKILL of ``copyjob run`` while both sides work (at the capture's third broker acknowledgement, before
    its position is saved; or as soon as the destination holds part of the changes): the next run loses and
    doubles nothing (every key once, every value the source's)."""
    job, _ = job_file(tmp_path, kafka_broker, shop, pg_url2, batch_events=100)
    ok("run", job)
    many_changes(shop, 10_000)
    if fault is not None:
        killed = copyjob("run", job, "--no-progress", env={"COPYJOB_FAULT": fault})
        assert killed.code == -signal.SIGKILL, killed.output
    else:
        proc = subprocess.Popen([sys.executable, "-m", "copyjob", "run", str(job), "--no-progress"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline and \
                    not rows(pg_url2, "SELECT count(*) FROM orders WHERE id >= 10000")[0][0]:
                time.sleep(0.02)
        finally:
            proc.kill()
            proc.wait(60)
    execute(shop, "UPDATE orders SET status = 'after the crash' WHERE id <= 20", "DELETE FROM orders WHERE id = 30")
    ok("run", job)
    equal(shop, pg_url2)
    assert rows(pg_url2, "SELECT count(*), count(DISTINCT id) FROM orders") == rows(
        shop, "SELECT count(*), count(DISTINCT id) FROM orders")
    ok("apply", job, "--until-caught-up")  # nothing left to apply
    equal(shop, pg_url2)


def apply_processes(parent: int) -> list[Any]:
    """The apply side's child processes of ``copyjob run`` (copyjob.kafka_apply_process)."""
    import psutil

    found = []
    try:
        for child in psutil.Process(parent).children():
            try:
                if "copyjob.kafka_apply_child" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.Error:
                pass
    except psutil.NoSuchProcess:
        pass
    return found


def gone(proc: Any) -> bool:
    import psutil

    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # killed; waiting for init to reap it
    except psutil.NoSuchProcess:
        return True


def test_run_killed_leaves_no_apply_process(tmp_path: Path, kafka_broker: KafkaBroker, shop: str,
                                            pg_url2: str) -> None:
    """The apply side runs in a child process (a core of its own); SIGKILL of ``copyjob run`` while the child
    applies takes the child with it (nothing left holding the group or writing), and the next run loses and
    doubles nothing."""
    job, _ = job_file(tmp_path, kafka_broker, shop, pg_url2, batch_events=100)
    ok("run", job)
    many_changes(shop, 10_000)
    proc = subprocess.Popen([sys.executable, "-m", "copyjob", "run", str(job), "--no-progress"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "COPYJOB_KAFKA_CHILD": "1"})
    try:
        deadline = time.monotonic() + 120
        children: list[Any] = []
        while proc.poll() is None and time.monotonic() < deadline and not (
                children and rows(pg_url2, "SELECT count(*) FROM orders WHERE id >= 10000")[0][0]):
            children = children or apply_processes(proc.pid)
            time.sleep(0.02)
        assert proc.poll() is None and children, "copyjob run ended before its apply process was seen applying"
    finally:
        proc.kill()
        proc.wait(60)
    deadline = time.monotonic() + 60
    while not all(gone(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(c) for c in children), [c.pid for c in children]
    execute(shop, "UPDATE orders SET status = 'after the crash' WHERE id <= 20", "DELETE FROM orders WHERE id = 30")
    ok("run", job)
    equal(shop, pg_url2)
    assert rows(pg_url2, "SELECT count(*), count(DISTINCT id) FROM orders") == rows(
        shop, "SELECT count(*), count(DISTINCT id) FROM orders")


@pytest.mark.parametrize("child", ["1", "0"])
def test_failures_of_either_side_reach_the_summary_and_history(tmp_path: Path, kafka_broker: KafkaBroker,
                                                               shop: str, pg_url2: str, child: str) -> None:
    """Whether the apply runs in a child process or not, the user sees the same: a capture that fails (a
    TRUNCATE on a topic of several partitions) and an apply that fails (a destination that cannot be reached)
    fail the table in the summary and the history with the same error, and the run exits 1."""
    env = {"COPYJOB_KAFKA_CHILD": child}
    several, _ = job_file(tmp_path, kafka_broker, shop, pg_url2)
    ok("run", several, env=env)
    execute(shop, "TRUNCATE orders")
    refused = copyjob("run", several, "--no-progress", env=env)
    assert refused.code == 1 and "TRUNCATE" in refused.stdout and "reset" in refused.stdout, refused.output
    last = json.loads(copyjob("history", several, "--json").stdout)[0]
    assert last["status"] == "failed" and "TRUNCATE" in last["tables"][0]["error"], last

    closed = "postgresql://copyjob@127.0.0.1:9/nowhere"  # the discard port: nothing listens
    unreachable, _ = job_file(tmp_path, kafka_broker, shop, closed)
    failed = copyjob("run", unreachable, "--no-progress", env=env)
    assert failed.code == 1, failed.output
    last = json.loads(copyjob("history", unreachable, "--json").stdout)[0]
    error = last["tables"][0]["error"]
    assert last["status"] == "failed" and error.startswith("apply: ") and "127.0.0.1:9" in error, last
    assert error in " ".join(failed.stdout.split()), failed.stdout
    assert f"apply failed: {error.removeprefix('apply: ')}" in failed.stderr, failed.stderr


@pytest.mark.parametrize(("knob", "cpus", "child"), [
    ("0", 8, False), ("1", 1, True), ("", 4, True), ("", 8, True), ("", 2, False), ("", 1, False)])
def test_when_the_apply_gets_a_process_of_its_own(monkeypatch: pytest.MonkeyPatch, knob: str, cpus: int,
                                                  child: bool) -> None:
    """COPYJOB_KAFKA_CHILD decides when set; else a child from 4 CPUs on, whatever the load."""
    from copyjob.kafka_apply_process import child_wanted

    monkeypatch.setenv("COPYJOB_KAFKA_CHILD", knob)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    assert child_wanted() is child
