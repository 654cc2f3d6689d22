"""``copyjob stream`` rides out outages: the source or the destination server is stopped while the stream runs
and started again on the same port and data folder; the stream keeps running, ``status`` says what it waits
for, and source and destination end equal row by row. Only past ``copy.max_outage`` does it give up (exit 1).

Each test stops a server of its own (started for this module), never the session's shared ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, copyjob, sqlite_rows, write_job
from tests.pg_cdc import drop_slots, execute, rows, table_fingerprint
from tests.services.kafka import KafkaBroker
from tests.services.mariadb import MariadbServer, start_mariadb
from tests.services.postgres import PostgresServer, start_postgres

DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def outage_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = start_postgres(tmp_path_factory.mktemp("pg_outage"))
    yield server
    server.stop(keep=False)


@pytest.fixture
def outage_db(outage_pg: PostgresServer) -> Iterator[str]:
    url = outage_pg.create_database(f"o_{os.getpid()}_{time.monotonic_ns()}")
    yield url
    if outage_pg.process.poll() is None:
        drop_slots(url)


def wait_for(what: str, condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def job_file(tmp_path: Path, src: str, dst: str, tables: list[dict[str, Any]] | None = None,
             **copy: Any) -> Path:
    return write_job(tmp_path / "job.yaml", {
        "job": "outage", "source": {"url": src}, "destination": {"url": dst},
        "copy": {"mode": "cdc", "update_method": "merge", **copy}, "cdc": {"max_batch_delay": "50ms"},
        "tables": tables or [{"name": "orders"}]})


class Stream:
    """``copyjob stream JOB`` as a subprocess, its output in a file (a pipe could fill up and block it)."""

    def __init__(self, job: Path) -> None:
        self.log = job.with_suffix(".log")
        self._out = self.log.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(job)], cwd=ROOT,
                                        env={**os.environ, "COLUMNS": "200"}, stdout=self._out,
                                        stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log.read_text()

    def running(self) -> bool:
        return self.process.poll() is None

    def until(self, what: str, condition: Callable[[], bool]) -> None:
        """Wait for ``condition`` while the stream runs (an exited stream fails the test at once)."""

        def met() -> bool:
            if not self.running():
                raise AssertionError(f"the stream exited while waiting for {what}:\n{self.output}")
            return condition()

        wait_for(what, met)

    def stop(self) -> int:
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=DEADLINE_S)
        self._out.close()
        return code


def waiting(job: Path) -> list[dict[str, Any]]:
    """The ``waiting`` entries of ``status --json`` (tables waiting for their source or destination)."""
    result = copyjob("status", job, "--json")
    assert result.code == 0, result.output
    return [t["waiting"] for t in json.loads(result.stdout)["tables"] if t.get("waiting")]


def waiting_for(job: Path, side: str) -> bool:
    found = waiting(job)
    return bool(found) and all(w["for"] == side and w["since"] and w["error"] for w in found)


def pg_equal(src: str, dst: str) -> bool:
    return table_fingerprint(src, "orders") == table_fingerprint(dst, "orders")


def orders(url: str) -> None:
    execute(url, "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2))",
            "INSERT INTO orders SELECT g, 'new', g * 1.5 FROM generate_series(1, 500) g")


# ---------------------------------------------------------------- PostgreSQL source


def test_stream_rides_out_a_source_outage(tmp_path: Path, outage_pg: PostgresServer, outage_db: str,
                                          pg_url2: str) -> None:
    orders(outage_db)
    job = job_file(tmp_path, outage_db, pg_url2)
    stream = Stream(job)
    try:
        stream.until("the snapshot", lambda: rows(pg_url2, "SELECT count(*) FROM orders") == [(500,)]
                 if _exists(pg_url2) else False)
        execute(outage_db, "INSERT INTO orders SELECT g, 'before', g FROM generate_series(501, 600) g",
                "UPDATE orders SET status = 'paid' WHERE id <= 50", "DELETE FROM orders WHERE id BETWEEN 51 AND 60")
        stream.until("the changes before the outage", lambda: pg_equal(outage_db, pg_url2))
        outage_pg.halt()
        try:
            stream.until("status: waiting for source", lambda: waiting_for(job, "source"))
            assert "waiting for source" in copyjob("status", job).stdout
            # an outage of some 10 s: the stream tries again 2, 4, … s apart
            stream.until("three attempts", lambda: "waiting for source (attempt 3" in stream.output)
            assert stream.running(), stream.output
        finally:
            outage_pg.start_again()
        execute(outage_db, "INSERT INTO orders SELECT g, 'after', g FROM generate_series(601, 700) g",
                "UPDATE orders SET status = 'after' WHERE id BETWEEN 100 AND 120")
        stream.until("the changes after the outage", lambda: pg_equal(outage_db, pg_url2))
        stream.until("status: no longer waiting", lambda: not waiting(job))
        assert stream.running(), stream.output
    finally:
        code = stream.stop()
    assert code == 0, stream.output
    assert pg_equal(outage_db, pg_url2)
    assert "waiting for source" in stream.output  # logged, with the reason, once per attempt


def test_stream_rides_out_a_destination_outage(tmp_path: Path, outage_pg: PostgresServer, outage_db: str,
                                               pg_url: str) -> None:
    orders(pg_url)
    job = job_file(tmp_path, pg_url, outage_db)
    stream = Stream(job)
    try:
        stream.until("the snapshot", lambda: _exists(outage_db) and rows(outage_db, "SELECT count(*) FROM orders")
                 == [(500,)])
        execute(pg_url, "UPDATE orders SET status = 'before' WHERE id <= 20")
        stream.until("the changes before the outage", lambda: pg_equal(pg_url, outage_db))
        outage_pg.halt()
        try:
            execute(pg_url, "INSERT INTO orders SELECT g, 'during', g FROM generate_series(501, 650) g",
                    "UPDATE orders SET status = 'during' WHERE id BETWEEN 21 AND 40",
                    "DELETE FROM orders WHERE id BETWEEN 41 AND 45")
            stream.until("status: waiting for destination", lambda: waiting_for(job, "destination"))
            execute(pg_url, "INSERT INTO orders SELECT g, 'still down', g FROM generate_series(651, 700) g")
            # an outage of some 10 s: the stream tries again 2, 4, … s apart
            stream.until("three attempts", lambda: "waiting for destination (attempt 3" in stream.output)
            assert stream.running(), stream.output
        finally:
            outage_pg.start_again()
        execute(pg_url, "UPDATE orders SET status = 'after' WHERE id BETWEEN 600 AND 660")
        stream.until("the changes during and after the outage", lambda: pg_equal(pg_url, outage_db))
        stream.until("status: no longer waiting", lambda: not waiting(job))
    finally:
        code = stream.stop()
        drop_slots(pg_url)
    assert code == 0, stream.output
    assert pg_equal(pg_url, outage_db)
    assert "waiting for destination" in stream.output


def test_max_outage_exceeded_exits_1(tmp_path: Path, outage_pg: PostgresServer, outage_db: str,
                                     pg_url2: str) -> None:
    orders(outage_db)
    job = job_file(tmp_path, outage_db, pg_url2, max_outage="2s")  # gives up at the second attempt
    stream = Stream(job)
    try:
        stream.until("the snapshot", lambda: _exists(pg_url2) and rows(pg_url2, "SELECT count(*) FROM orders")
                 == [(500,)])
        outage_pg.halt()
        try:
            code = stream.process.wait(timeout=DEADLINE_S)
        finally:
            outage_pg.start_again()
    finally:
        stream.stop()
    assert code == 1, stream.output
    assert "max_outage" in stream.output and "2s" in stream.output, stream.output
    assert "source" in stream.output


def _exists(url: str) -> bool:
    return rows(url, "SELECT to_regclass('orders') IS NOT NULL") == [(True,)]


# ---------------------------------------------------------------- MariaDB source


@pytest.fixture(scope="module")
def outage_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariadbServer]:
    server = start_mariadb(tmp_path_factory.mktemp("mariadb_outage"))
    yield server
    server.stop(keep=False)


def test_stream_rides_out_a_mariadb_source_outage(tmp_path: Path, outage_mariadb: MariadbServer) -> None:
    server = outage_mariadb
    name = f"mo_{os.getpid()}"
    src = server.create_database(name)

    def sql(*statements: str) -> None:
        server.execute_all(name, *statements)

    def source_rows() -> list[tuple[Any, ...]]:
        return [tuple(r) for r in server.execute("SELECT id, status FROM orders ORDER BY id", name)]

    sql("CREATE TABLE orders (id int PRIMARY KEY, status varchar(20) NOT NULL) ENGINE=InnoDB",
        "INSERT INTO orders SELECT seq, 'new' FROM seq_1_to_300")
    dst = tmp_path / "dst.db"
    job = job_file(tmp_path, src, f"sqlite:///{dst}")

    def equal() -> bool:
        try:
            return sqlite_rows(dst, "SELECT id, status FROM orders ORDER BY id") == source_rows()
        except Exception:  # not created yet
            return False

    stream = Stream(job)
    try:
        stream.until("the snapshot", equal)
        sql("INSERT INTO orders SELECT seq, 'before' FROM seq_301_to_400", "UPDATE orders SET status = 'x' "
            "WHERE id <= 30", "DELETE FROM orders WHERE id BETWEEN 31 AND 40")
        stream.until("the changes before the outage", equal)
        server.stop()
        try:
            stream.until("status: waiting for source", lambda: waiting_for(job, "source"))
            stream.until("three attempts", lambda: "waiting for source (attempt 3" in stream.output)
            assert stream.running(), stream.output
        finally:
            server.start_again()
        sql("INSERT INTO orders SELECT seq, 'after' FROM seq_401_to_500", "UPDATE orders SET status = 'y' "
            "WHERE id BETWEEN 100 AND 150")
        stream.until("the changes after the outage", equal)
        stream.until("status: no longer waiting", lambda: not waiting(job))
    finally:
        code = stream.stop()
    assert code == 0, stream.output
    assert equal()


# ---------------------------------------------------------------- Kafka transport: the apply side


def test_kafka_stream_rides_out_a_destination_outage(tmp_path: Path, kafka_broker: KafkaBroker,
                                                     outage_pg: PostgresServer, outage_db: str, pg_url: str) -> None:
    orders(pg_url)
    job = write_job(tmp_path / "job.yaml", {
        "job": "kafka_outage", "source": {"url": pg_url}, "destination": {"url": outage_db},
        "copy": {"mode": "cdc", "update_method": "merge"}, "cdc": {"max_batch_delay": "50ms"},
        "tables": [{"name": "orders"}], "transport": "kafka",
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic_prefix": f"outage{os.getpid()}"}})
    stream = Stream(job)
    try:
        stream.until("the snapshot", lambda: _exists(outage_db) and pg_equal(pg_url, outage_db))
        outage_pg.halt()
        try:
            execute(pg_url, "INSERT INTO orders SELECT g, 'during', g FROM generate_series(501, 600) g",
                    "UPDATE orders SET status = 'during' WHERE id <= 30", "DELETE FROM orders WHERE id = 31")
            # tried again once (2 s later): the apply side keeps waiting for its destination
            stream.until("two attempts", lambda: "waiting for destination (attempt 2" in stream.output)
        finally:
            outage_pg.start_again()
        execute(pg_url, "UPDATE orders SET status = 'after' WHERE id BETWEEN 590 AND 610")
        stream.until("the changes during and after the outage", lambda: pg_equal(pg_url, outage_db))
    finally:
        code = stream.stop()
        drop_slots(pg_url)
    assert code == 0, stream.output
    assert pg_equal(pg_url, outage_db)


def test_max_outage_is_checked_when_the_job_is_loaded(tmp_path: Path) -> None:
    job = job_file(tmp_path, "sqlite:///src.db", "sqlite:///dst.db", max_outage="soon")
    result = copyjob("validate", job)
    assert result.code == 2 and "copy.max_outage" in result.output and "soon" in result.output, result.output
    for fine in ("never", "90s", "2h"):
        job = job_file(tmp_path, "sqlite:///src.db", "sqlite:///dst.db", max_outage=fine)
        assert "copy.max_outage" not in copyjob("validate", job).output
