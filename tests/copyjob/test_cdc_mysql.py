"""CDC from MariaDB (ROW binlog) through the command line: into PostgreSQL and DuckDB, merge and append, with a
writer that keeps changing the table while the snapshot and the stream run, and copyjob SIGKILLed and restarted.

Merge must end equal to the source (a full-table comparison). Append must hold every change exactly once: no
position twice, and the last change of each key, replayed in position order, gives the source again.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from copyjob.ingest.mysql_cdc import order_key

from copyjob.core.schema import TableName
from copyjob.core.urls import parse_url
from tests.helpers import ROOT, copyjob, write_job
from tests.services.mariadb import MariadbServer

pytest.importorskip("pymysqlreplication")

COLUMNS = "id, name, amount, updated_at, flag, note"
CREATE = ("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, amount DECIMAL(12,2), "
          "updated_at TIMESTAMP(6) NULL, flag TINYINT(1), note TEXT) ENGINE=InnoDB")


@dataclass
class Source:
    server: MariadbServer
    url: str

    @property
    def database(self) -> str:
        return self.url.rsplit("/", 1)[1]

    def sql(self, *statements: str) -> None:
        self.server.execute_all(self.database, *statements)

    def fill(self, rows: int) -> None:
        conn = self.server.connect(self.database)
        try:
            with conn.cursor() as cur:
                for start in range(0, rows, 5000):
                    values = ",".join(f"({i}, 'item {i}', {i % 1000}.25, '2024-01-01 00:00:00.{i % 1000000:06d}', "
                                      f"{i % 2}, {'NULL' if i % 3 else repr(f'note {i}')})"
                                      for i in range(start, min(rows, start + 5000)))
                    cur.execute(f"INSERT INTO items ({COLUMNS}) VALUES {values}")
        finally:
            conn.close()


class Writer:
    """Random inserts, updates and deletes (some in multi-row transactions) until stopped, about 100 transactions
    a second at most (a run must be able to catch up even on a busy machine)."""

    def __init__(self, source: Source, first_new_id: int, seed: int = 7) -> None:
        self._source = source
        self._random = random.Random(seed)
        self._next_id = first_new_id
        self._stop = threading.Event()
        self.transactions = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert self.error is None, self.error

    def _main(self) -> None:
        try:
            conn = self._source.server.connect(self._source.database)
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    self._transaction(cur)
                    self.transactions += 1
                    time.sleep(0.01)
            conn.close()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _transaction(self, cur: Any) -> None:
        r = self._random
        statements = []
        for _ in range(r.choice([1, 1, 1, 3, 20])):
            roll = r.random()
            if roll < 0.4:
                self._next_id += 1
                statements.append(f"INSERT INTO items ({COLUMNS}) VALUES ({self._next_id}, 'new {self._next_id}', "
                                  f"{r.randint(0, 9999)}.5, UTC_TIMESTAMP(6), {r.randint(0, 1)}, 'w')")
            elif roll < 0.8:
                statements.append(f"UPDATE items SET amount = amount + 1, name = CONCAT(name, '+'), "
                                  f"updated_at = UTC_TIMESTAMP(6) WHERE id = {r.randint(0, self._next_id)}")
            else:
                statements.append(f"DELETE FROM items WHERE id = {r.randint(0, self._next_id)}")
        cur.execute("BEGIN")
        for s in statements:
            cur.execute(s)
        cur.execute("COMMIT")


@pytest.fixture
def source(mariadb_server: MariadbServer, mariadb_url: str) -> Source:
    s = Source(mariadb_server, mariadb_url)
    s.sql(CREATE)
    return s


def job(tmp_path: Path, source: Source, destination: str, method: str, tables: tuple[str, ...] = ("items",),
        **cdc: Any) -> Path:
    return write_job(tmp_path / "job.yaml", {
        "job": "mycdc", "source": {"url": source.url}, "destination": {"url": destination},
        "copy": {"mode": "cdc", "update_method": method}, "cdc": {"max_batch_delay": "100ms", **cdc},
        "tables": [{"name": t} for t in tables],
    })


def rows_of(url: str, table: str) -> list[dict[str, Any]]:
    """Every row as the connector reads it (logical types), sorted by id."""
    from copyjob.connectors import open_source

    src = open_source(parse_url(url))
    try:
        schema = src.reflect(TableName.parse(table))
        rows = [r for b in src.read(schema) for r in b.to_pylist()]
    finally:
        src.close()
    return sorted(rows, key=lambda r: r["id"])


def source_rows(source: Source) -> list[dict[str, Any]]:
    return rows_of(source.url, "items")


def run_ok(job_file: Path) -> None:
    result = copyjob("run", job_file, "--no-progress", timeout=180)
    assert result.code == 0, result.output


def replayed(append_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table an append destination describes: per key, its last change (by position), unless a delete."""
    positions = [r["_position"] for r in append_rows if r["_op"] != "r"]
    assert len(positions) == len(set(positions)), "a change was written twice"
    last: dict[int, dict[str, Any]] = {}
    for r in sorted(append_rows, key=lambda r: order_key(json.loads(r["_position"]))):
        last[r["id"]] = r
    return sorted(({k: v for k, v in r.items() if not k.startswith("_")} for r in last.values()
                   if r["_op"] != "d"), key=lambda r: r["id"])


# ---------------------------------------------------------------- merge and append, with a concurrent writer


def test_merge_into_postgres_while_a_writer_runs_then_reset(tmp_path: Path, source: Source, pg_url: str) -> None:
    source.fill(10_000)
    source.sql("CREATE TABLE other (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO other VALUES (1, 'a'), (2, 'b')")
    j = job(tmp_path, source, pg_url, "merge", tables=("items", "other"), batch_events=500)
    with Writer(source, 10_000) as writer:
        run_ok(j)  # snapshot while the writer writes, then the changes up to the run's start
        time.sleep(0.5)
        run_ok(j)
        assert copyjob("reset", j, "--table", "items").code == 0
        source.sql("UPDATE other SET v = 'bb' WHERE id = 2", "INSERT INTO other VALUES (3, 'c')")
        run_ok(j)  # items snapshotted again while the writer writes and other streams on
        time.sleep(0.5)
        source.sql("DELETE FROM other WHERE id = 1")
    assert writer.transactions > 20
    run_ok(j)
    assert rows_of(pg_url, "public.items") == source_rows(source)
    assert rows_of(pg_url, "public.other") == rows_of(source.url, "other")
    status = copyjob("status", j, "--json")
    assert status.code == 0 and "0-1-" in status.stdout


def test_append_into_duckdb_holds_every_change_once(tmp_path: Path, source: Source) -> None:
    source.fill(2_000)
    duck = f"duckdb:///{tmp_path / 'out.duckdb'}"
    j = job(tmp_path, source, duck, "append")
    with Writer(source, 2_000, seed=11):
        run_ok(j)
        time.sleep(0.5)
    source.sql("UPDATE items SET note = 'last' WHERE id < 10", "DELETE FROM items WHERE id BETWEEN 10 AND 19")
    run_ok(j)
    changes = rows_of(duck, "items")
    assert {r["_op"] for r in changes} >= {"r", "c", "u", "d"}
    assert all(r["_commit_ts"] is not None for r in changes if r["_op"] != "r")
    assert replayed(changes) == source_rows(source)


def test_stream_keeps_going_until_sigterm(tmp_path: Path, source: Source, pg_url: str) -> None:
    source.fill(1_000)
    j = job(tmp_path, source, pg_url, "merge")
    proc = spawn(j, "stream", str(j))
    try:
        with Writer(source, 1_000, seed=13):
            deadline = time.monotonic() + 60
            while "stream" not in activity(source):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout and proc.stdout.read()
                time.sleep(0.05)
            time.sleep(1.5)
        expected = source_rows(source)
        deadline = time.monotonic() + 30
        while rows_of(pg_url, "public.items") != expected:
            assert time.monotonic() < deadline, "the stream did not apply every change"
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output


# ---------------------------------------------------------------- SIGKILL and restart


def spawn(job_file: Path, *args: str) -> subprocess.Popen[str]:
    command = args or ("run", str(job_file), "--no-progress")
    return subprocess.Popen([sys.executable, "-m", "copyjob", *command], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def activity(source: Source) -> set[str]:
    """What the job's connections are doing: ``snapshot`` (its consistent-snapshot transaction is open),
    ``stream`` (a binlog dump)."""
    found = set()
    for (command,) in source.server.execute("SELECT COMMAND FROM information_schema.PROCESSLIST "
                                            "WHERE USER = 'copyjob'"):
        if str(command).startswith("Binlog Dump"):
            found.add("stream")
    if source.server.execute("SELECT 1 FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p "
                             "ON p.ID = t.trx_mysql_thread_id WHERE p.USER = 'copyjob'"):
        found.add("snapshot")
    # a read-only snapshot transaction may not show in INNODB_TRX: its SELECT of the table does
    if source.server.execute("SELECT 1 FROM information_schema.PROCESSLIST WHERE USER = 'copyjob' "
                             "AND INFO LIKE 'SELECT%FROM%items%'"):
        found.add("snapshot")
    return found


def kill_during(job_file: Path, source: Source, phase: str, after_s: float) -> bool:
    """Start ``copyjob run`` (for the snapshot phase) or ``copyjob stream``, SIGKILL it ``after_s`` seconds into
    ``phase``; False when it ended before."""
    proc = spawn(job_file) if phase == "snapshot" else spawn(job_file, "stream", str(job_file))
    deadline = time.monotonic() + 60
    try:
        while phase not in activity(source):
            if proc.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"no {phase} seen"
            time.sleep(0.02)
        time.sleep(after_s)
        return proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("method", ["merge", "append"])
def test_sigkill_at_several_points_then_restart(tmp_path: Path, source: Source, method: str) -> None:
    """Killed during the snapshot, then during the stream (the writer keeps going); small batches split the
    writer's 20-row transactions into several destination transactions, so kills land inside one."""
    source.fill(60_000)  # more than one snapshot read (50,000 rows each): the kill lands inside the snapshot
    duck = f"duckdb:///{tmp_path / 'out.duckdb'}"
    j = job(tmp_path, source, duck, method, batch_events=7)
    with Writer(source, 60_000, seed=3 if method == "merge" else 5):
        assert kill_during(j, source, "snapshot", 0.05)
        for after_s in (0.3, 1.0):
            assert kill_during(j, source, "stream", after_s)
    run_ok(j)
    if method == "merge":
        assert rows_of(duck, "items") == source_rows(source)
    else:
        assert replayed(rows_of(duck, "items")) == source_rows(source)
