"""Editing a job file resets what the edit invalidates (issue 15), through the real CLI: each table's marker
records the definition it was built under (source, incremental column, key under merge, cdc or polled, update
method, target, column mapping, file pattern and format); a run after an edit that changes it starts the table
over and says why, in the run's output, in ``status`` and in ``validate``. Other edits (batch sizes, parallel
readers) change nothing. With `transport: kafka` the capture side (positions in the state store) does the same."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CliResult, copyjob, sqlite_exec, sqlite_rows, sqlite_script, write_job
from tests.pg_cdc import drop_slots, execute, rows, table_fingerprint
from tests.services.kafka import KafkaBroker
from tests.services.mariadb import MariadbServer

SCHEMA = "CREATE TABLE events (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, seq INTEGER NOT NULL, name TEXT);"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """``ts`` runs far ahead of ``seq``: a ``ts`` watermark compared with ``seq`` would read nothing."""
    db = tmp_path / "src.db"
    sqlite_script(db, SCHEMA)
    add(db, range(1, 21))
    return db


def add(db: Path, ids: range) -> None:
    sqlite_exec(db, "INSERT INTO events VALUES (?, ?, ?, ?)", [(i, 1_000_000 + i, i, f"n{i}") for i in ids])


def job(tmp_path: Path, table: dict[str, Any], **copy: Any) -> Path:
    return write_job(tmp_path / "job.yaml", {
        "job": "edits", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "incremental", "update_method": "append", **copy},
        "tables": [{"name": "events", **table}]})


def run(job_file: Path) -> tuple[CliResult, dict[str, Any]]:
    result = copyjob("run", job_file, "--no-progress")
    assert result.code == 0, result.output
    latest: dict[str, Any] = json.loads(copyjob("history", job_file, "--json", "--limit", "1").stdout)[0]
    return result, latest["tables"][0]


def starts_over(edited: Path, reason: str, next_run: str = "full") -> dict[str, Any]:
    """``validate`` and ``status`` announce the edit's reset, and the next run does it and says why."""
    assert f"({reason})" in copyjob("validate", edited).stdout
    assert status(edited)["next_run"] == f"{next_run} ({reason})"
    result, record = run(edited)
    assert record["note"] == reason and reason in result.stdout
    return record


def status(job_file: Path) -> dict[str, Any]:
    table: dict[str, Any] = json.loads(copyjob("status", job_file, "--json").stdout)["tables"][0]
    return table


def source_rows(db: Path) -> list[tuple[Any, ...]]:
    return sqlite_rows(db, "SELECT id, ts, seq, name FROM events ORDER BY id")


EDITS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]] = {
    "incremental column": ({"incremental_column": "ts"}, {"incremental_column": "seq"}, {},
                           "incremental column changed: ts → seq"),
    "key under merge": ({"incremental_column": "ts", "key": ["id"]},
                        {"incremental_column": "ts", "key": ["id", "seq"]}, {"update_method": "merge"},
                        "key changed: id → id, seq"),
    "target": ({"incremental_column": "ts"}, {"incremental_column": "ts", "target": "events_v2"}, {},
               "target table changed: events → events_v2"),
    "column mapping": ({"incremental_column": "ts"}, {"incremental_column": "ts", "columns": {"name": "label"}},
                       {}, "column mapping changed: none → name: label"),
}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_an_edit_that_invalidates_starts_the_table_over(tmp_path: Path, source: Path, edit: str) -> None:
    before, after, copy, reason = EDITS[edit]
    first = job(tmp_path, before, **copy)
    assert run(first)[1]["mode"] == "full"
    add(source, range(21, 26))
    assert run(first)[1]["mode"] == "incremental"
    add(source, range(26, 31))
    edited = job(tmp_path, after, **copy)

    checked = copyjob("validate", edited)
    assert checked.code == 0, checked.output
    target = after.get("target", "events")
    assert f"note: {target}: the next run starts it over ({reason})" in checked.stdout
    assert status(edited)["next_run"] == f"full ({reason})"

    result, record = run(edited)
    assert record["mode"] == "full" and record["note"] == reason
    assert record["rows_written"] == 30
    assert reason in result.stdout
    name = "label" if edit == "column mapping" else "name"
    assert sqlite_rows(tmp_path / "dst.db", f"SELECT id, ts, seq, {name} FROM {target} ORDER BY id") \
        == source_rows(source)

    # the new definition is the one recorded now: the edit resets once
    assert "note:" not in copyjob("validate", edited).stdout
    assert status(edited)["next_run"] == "incremental"
    add(source, range(31, 34))
    again = run(edited)[1]
    reread = 1 if copy.get("update_method") == "merge" else 0  # merge reads the boundary row again
    assert again["mode"] == "incremental" and again["rows_written"] == 3 + reread and again["note"] is None
    assert sqlite_rows(tmp_path / "dst.db", f"SELECT id, ts, seq, {name} FROM {target} ORDER BY id") \
        == source_rows(source)


def test_settings_that_do_not_invalidate_keep_the_table_incremental(tmp_path: Path, source: Path) -> None:
    first = job(tmp_path, {"incremental_column": "ts"})
    run(first)
    add(source, range(21, 26))
    edited = job(tmp_path, {"incremental_column": "ts"}, batch_rows=500, parallel=4)
    checked = copyjob("validate", edited)
    assert checked.code == 0 and "note:" not in checked.stdout, checked.output
    assert status(edited)["next_run"] == "incremental"
    record = run(edited)[1]
    assert record["mode"] == "incremental" and record["rows_written"] == 5 and record["note"] is None
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, ts, seq, name FROM events ORDER BY id") \
        == source_rows(source)


def test_validate_writes_nothing(tmp_path: Path, source: Path) -> None:
    checked = copyjob("validate", job(tmp_path, {"incremental_column": "ts"}))
    assert checked.code == 0, checked.output
    assert not (tmp_path / ".copyjob").exists()


# ---------------------------------------------------------------- a file set


def test_a_new_file_pattern_loads_the_set_again(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(1, 4):
        (folder / f"a{n}.csv").write_text("id,name\n" + "".join(f"{n * 10 + i},x{i}\n" for i in range(3)))
        (folder / f"b{n}.csv").write_text("id,name\n" + "".join(f"{n * 100 + i},y{i}\n" for i in range(2)))

    def files_job(pattern: str) -> Path:
        return write_job(tmp_path / "job.yaml", {
            "job": "files", "source": {"url": "./in"}, "destination": {"url": "sqlite:///dst.db"},
            "copy": {"mode": "incremental", "update_method": "append"},
            "tables": [{"name": "things", "pattern": pattern, "format": "csv"}]})

    first = files_job("a*.csv")
    assert run(first)[1]["rows_written"] == 9
    edited = files_job("*.csv")
    reason = "file pattern changed: a*.csv → *.csv"
    record = starts_over(edited, reason)
    assert record["mode"] == "full"
    assert sqlite_rows(tmp_path / "dst.db", "SELECT COUNT(*), COUNT(DISTINCT id) FROM things") == [(15, 15)]


# ---------------------------------------------------------------- CDC from PostgreSQL


@pytest.fixture
def shop(pg_url: str) -> Iterator[str]:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2))",
            "INSERT INTO orders SELECT g, 'new', g * 1.5 FROM generate_series(1, 500) g")
    yield pg_url
    drop_slots(pg_url)


def cdc_job(tmp_path: Path, src: str, dst: str, table: dict[str, Any]) -> Path:
    return write_job(tmp_path / "job.yaml", {
        "job": "edits_cdc", "source": {"url": src}, "destination": {"url": dst},
        "copy": {"mode": "cdc", "update_method": "merge"}, "cdc": {"max_batch_delay": "50ms"},
        "tables": [{"name": "public.orders", **table}]})


def test_cdc_a_new_column_mapping_snapshots_again(tmp_path: Path, shop: str, pg_url2: str) -> None:
    first = cdc_job(tmp_path, shop, pg_url2, {})
    run(first)
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id <= 50", "DELETE FROM orders WHERE id > 480")
    assert run(first)[1]["rows_read"] > 0
    execute(shop, "INSERT INTO orders SELECT g, 'late', 1 FROM generate_series(501, 510) g")
    edited = cdc_job(tmp_path, shop, pg_url2, {"columns": {"amount": "price"}})
    reason = "column mapping changed: none → amount: price"
    starts_over(edited, reason, "snapshot")
    assert table_fingerprint(pg_url2, "orders", "id, status, price") \
        == table_fingerprint(shop, "orders", "id, status, amount")
    execute(shop, "UPDATE orders SET status = 'shipped', amount = 2 WHERE id <= 5")
    run(edited)
    assert table_fingerprint(pg_url2, "orders", "id, status, price") \
        == table_fingerprint(shop, "orders", "id, status, amount")


def test_cdc_from_append_to_merge_snapshots_again(tmp_path: Path, shop: str, pg_url2: str) -> None:
    before, after = "append", "merge"
    first = cdc_job(tmp_path, shop, pg_url2, {"update_method": before})
    run(first)
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id <= 50")
    run(first)
    edited = cdc_job(tmp_path, shop, pg_url2, {"update_method": after})
    reason = f"update method changed: {before} → {after}"
    assert status(edited)["next_run"] == f"snapshot ({reason})"
    result, record = run(edited)
    assert record["note"] == reason and reason in result.stdout
    columns = "id, status, amount"
    assert table_fingerprint(pg_url2, "orders", columns) == table_fingerprint(shop, "orders", columns)
    execute(shop, "UPDATE orders SET status = 'shipped' WHERE id <= 5", "DELETE FROM orders WHERE id > 490")
    run(edited)
    assert table_fingerprint(pg_url2, "orders", columns) == table_fingerprint(shop, "orders", columns)


# ---------------------------------------------------------------- transport: kafka (positions in the state store)


def test_kafka_capture_side_starts_over_after_an_edit(tmp_path: Path, source: Path,
                                                      kafka_broker: KafkaBroker) -> None:
    def kafka_job(column: str) -> Path:
        return write_job(tmp_path / "job.yaml", {
            "job": "edits_kafka", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
            "copy": {"mode": "incremental", "update_method": "merge"},
            "tables": [{"name": "events", "incremental_column": column}], "transport": "kafka",
            "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic_prefix": f"edits{os.getpid()}"}})

    first = kafka_job("ts")
    assert run(first)[1]["mode"] == "full"
    add(source, range(21, 26))
    assert run(first)[1]["mode"] == "incremental"
    add(source, range(26, 31))
    edited = kafka_job("seq")
    reason = "incremental column changed: ts → seq"
    record = starts_over(edited, reason)
    assert record["mode"] == "full"
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, ts, seq, name FROM events ORDER BY id") \
        == source_rows(source)


# ---------------------------------------------------------------- the destination table's shape changes


HARMLESS: dict[str, Any] = {"schedules": [{"every": "1h"}], "triggers": [{"file_arrival": {"path": "./inbox"}}],
                            "check": {"max_age": "26h"}}
"""Job-level settings that decide when and how fast a job runs, never which rows or how they land."""


def test_a_not_null_column_renamed_rebuilds_the_table(tmp_path: Path, source: Path) -> None:
    """``seq`` is NOT NULL in the destination: a table that kept it beside the new ``position`` refuses rows."""
    first = job(tmp_path, {"incremental_column": "ts", "key": ["id"]}, update_method="merge")
    run(first)
    add(source, range(21, 26))
    edited = job(tmp_path, {"incremental_column": "ts", "key": ["id"], "columns": {"seq": "position"}},
                 update_method="merge")
    record = starts_over(edited, "column mapping changed: none → seq: position")
    assert record["mode"] == "full" and record["rows_written"] == 25
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, ts, position, name FROM events ORDER BY id") \
        == source_rows(source)
    add(source, range(26, 29))
    assert run(edited)[1]["mode"] == "incremental"
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, ts, position, name FROM events ORDER BY id") \
        == source_rows(source)


def test_cdc_a_not_null_column_renamed_snapshots_into_the_new_shape(tmp_path: Path, shop: str,
                                                                     pg_url2: str) -> None:
    first = cdc_job(tmp_path, shop, pg_url2, {})
    run(first)
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id <= 50")
    run(first)
    edited = cdc_job(tmp_path, shop, pg_url2, {"columns": {"status": "state"}})
    starts_over(edited, "column mapping changed: none → status: state", "snapshot")
    assert table_fingerprint(pg_url2, "orders", "id, state, amount") \
        == table_fingerprint(shop, "orders", "id, status, amount")
    execute(shop, "UPDATE orders SET status = 'shipped' WHERE id <= 5", "DELETE FROM orders WHERE id > 490")
    run(edited)
    assert table_fingerprint(pg_url2, "orders", "id, state, amount") \
        == table_fingerprint(shop, "orders", "id, status, amount")


def test_cdc_from_merge_to_append_snapshots_into_a_change_table(tmp_path: Path, shop: str, pg_url2: str) -> None:
    """The merge table (keyed, no change columns) cannot hold changes: the snapshot replaces it."""
    first = cdc_job(tmp_path, shop, pg_url2, {"update_method": "merge"})
    run(first)
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id <= 50")
    run(first)
    edited = cdc_job(tmp_path, shop, pg_url2, {"update_method": "append"})
    starts_over(edited, "update method changed: merge → append", "snapshot")
    snapshot = "SELECT id, status, amount FROM orders WHERE _op = 'r' ORDER BY id"
    assert rows(pg_url2, snapshot) == rows(shop, "SELECT id, status, amount FROM orders ORDER BY id")
    assert rows(pg_url2, "SELECT count(*) FROM orders") == [(500,)]
    execute(shop, "UPDATE orders SET status = 'shipped' WHERE id <= 5")
    run(edited)
    assert rows(pg_url2, "SELECT count(*) FROM orders WHERE _op = 'u'") == [(5,)]


def test_cdc_a_new_target_says_why(tmp_path: Path, shop: str, pg_url2: str) -> None:
    first = cdc_job(tmp_path, shop, pg_url2, {})
    run(first)
    edited = cdc_job(tmp_path, shop, pg_url2, {"target": "orders_v2"})
    starts_over(edited, "target table changed: public.orders → orders_v2", "snapshot")
    assert table_fingerprint(pg_url2, "orders_v2") == table_fingerprint(shop, "orders")


def test_cdc_settings_that_do_not_invalidate_keep_streaming(tmp_path: Path, shop: str, pg_url2: str) -> None:
    run(cdc_job(tmp_path, shop, pg_url2, {}))
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id <= 7")
    edited = write_job(tmp_path / "job.yaml", {
        "job": "edits_cdc", "source": {"url": shop}, "destination": {"url": pg_url2},
        "copy": {"mode": "cdc", "update_method": "merge", "batch_rows": 300, "parallel": 3},
        "cdc": {"max_batch_delay": "80ms"}, "tables": [{"name": "public.orders", "check": {"max_age": "2h"}}],
        **HARMLESS})
    (tmp_path / "inbox").mkdir()
    checked = copyjob("validate", edited)
    assert checked.code == 0 and "note:" not in checked.stdout, checked.output
    assert status(edited)["next_run"] == "stream"
    record = run(edited)[1]
    assert record["mode"] == "cdc" and record["rows_read"] == 7 and record["note"] is None
    assert table_fingerprint(pg_url2, "orders") == table_fingerprint(shop, "orders")


def prefix(tmp_path: Path) -> str:
    """Topics of this test only (a new destination applies its topics from their beginning)."""
    return f"edits{os.getpid()}.{tmp_path.name}"


def kafka_job(tmp_path: Path, broker: KafkaBroker, table: dict[str, Any], method: str = "merge",
              **job_level: Any) -> Path:
    return write_job(tmp_path / "job.yaml", {
        "job": "edits_kafka", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "incremental", "update_method": method}, "tables": [{"name": "events", **table}],
        "transport": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": prefix(tmp_path)},
        **job_level})


def test_kafka_apply_side_under_append_starts_over_once(tmp_path: Path, source: Path,
                                                        kafka_broker: KafkaBroker) -> None:
    """The capture side publishes the table again; the apply side replaces what it appended before, once."""
    first = kafka_job(tmp_path, kafka_broker, {"incremental_column": "ts"}, "append")
    run(first)
    add(source, range(21, 26))
    assert run(first)[1]["rows_written"] == 5
    add(source, range(26, 31))
    edited = kafka_job(tmp_path, kafka_broker, {"incremental_column": "seq"}, "append")
    record = starts_over(edited, "incremental column changed: ts → seq")
    assert record["mode"] == "full" and record["rows_written"] == 30
    dst = tmp_path / "dst.db"
    assert sqlite_rows(dst, "SELECT id, ts, seq, name FROM events ORDER BY id") == source_rows(source)
    add(source, range(31, 34))
    again = run(edited)[1]
    assert again["mode"] == "incremental" and again["rows_written"] == 3 and again["note"] is None
    assert sqlite_rows(dst, "SELECT id, ts, seq, name FROM events ORDER BY id") == source_rows(source)


def test_kafka_settings_that_do_not_invalidate_keep_the_table_incremental(tmp_path: Path, source: Path,
                                                                          kafka_broker: KafkaBroker) -> None:
    run(kafka_job(tmp_path, kafka_broker, {"incremental_column": "ts"}))
    add(source, range(21, 26))
    edited = kafka_job(tmp_path, kafka_broker, {"incremental_column": "ts", "check": {"max_age": "2h"}},
                       **HARMLESS)
    (tmp_path / "inbox").mkdir()
    checked = copyjob("validate", edited)
    assert checked.code == 0 and "note:" not in checked.stdout, checked.output
    assert status(edited)["next_run"] == "incremental"
    record = run(edited)[1]
    # merge reads the boundary row again
    assert record["mode"] == "incremental" and record["rows_read"] == 6 and record["note"] is None
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, ts, seq, name FROM events ORDER BY id") \
        == source_rows(source)


# ---------------------------------------------------------------- CDC from MariaDB, direct and through Kafka


class Maria:
    """A MariaDB source table ``items`` (``name`` NOT NULL) and the job that copies it into SQLite."""

    def __init__(self, tmp_path: Path, server: MariadbServer, url: str, transport: str, broker: Any) -> None:
        self.tmp_path, self.server, self.url, self.transport, self.broker = tmp_path, server, url, transport, broker
        self.sql("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INT)",
                 "INSERT INTO items VALUES " + ",".join(f"({i}, 'item {i}', {i % 7})" for i in range(1, 201)))

    def sql(self, *statements: str) -> None:
        self.server.execute_all(self.url.rsplit("/", 1)[1], *statements)

    def rows(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.server.execute("SELECT id, name, qty FROM items ORDER BY id",
                                                      self.url.rsplit("/", 1)[1])]

    def job(self, table: dict[str, Any], method: str = "merge", copy: dict[str, Any] | None = None,
            **job_level: Any) -> Path:
        kafka = {"transport": "kafka", "kafka": {"bootstrap_servers": self.broker.bootstrap,
                                                 "topic_prefix": prefix(self.tmp_path)}} \
            if self.transport == "kafka" else {}
        return write_job(self.tmp_path / "job.yaml", {
            "job": "edits_maria", "source": {"url": self.url}, "destination": {"url": "sqlite:///dst.db"},
            "copy": {"mode": "cdc", "update_method": method, **(copy or {})}, "cdc": {"max_batch_delay": "50ms"},
            "tables": [{"name": "items", **table}], **kafka, **job_level})

    def copied(self, columns: str = "id, name, qty", table: str = "items") -> list[tuple[Any, ...]]:
        return sqlite_rows(self.tmp_path / "dst.db", f"SELECT {columns} FROM {table} ORDER BY id")


@pytest.fixture(params=["direct", "kafka"])
def maria(request: pytest.FixtureRequest, tmp_path: Path, mariadb_server: MariadbServer,
          mariadb_url: str) -> Maria:
    pytest.importorskip("pymysqlreplication")
    broker = request.getfixturevalue("kafka_broker") if request.param == "kafka" else None
    return Maria(tmp_path, mariadb_server, mariadb_url, request.param, broker)


MARIA_EDITS: dict[str, tuple[dict[str, Any], str, str, str, str]] = {
    "key": ({"key": ["id", "qty"]}, "merge", "key changed: none → id, qty", "id, name, qty", "items"),
    "target": ({"target": "items_v2"}, "merge", "target table changed: items → items_v2", "id, name, qty",
               "items_v2"),
    "not null column renamed": ({"columns": {"name": "label"}}, "merge",
                                "column mapping changed: none → name: label", "id, label, qty", "items"),
    "update method": ({}, "append", "update method changed: merge → append", "id, name, qty", "items"),
}


@pytest.mark.parametrize("edit", MARIA_EDITS, ids=list(MARIA_EDITS))
def test_mariadb_cdc_edits_start_the_table_over(maria: Maria, edit: str) -> None:
    after, method, reason, columns, target = MARIA_EDITS[edit]
    first = maria.job({})
    run(first)
    maria.sql("UPDATE items SET qty = qty + 10 WHERE id <= 20", "DELETE FROM items WHERE id > 190")
    assert run(first)[1]["rows_read"] == 30
    assert maria.copied() == maria.rows()
    maria.sql("INSERT INTO items VALUES (500, 'late', 1)", "DELETE FROM items WHERE id = 1")
    edited = maria.job(after, method)
    starts_over(edited, reason, "snapshot")
    if method == "append":  # the snapshot's rows, and nothing of the merge table before
        assert sqlite_rows(maria.tmp_path / "dst.db", f"SELECT {columns} FROM {target} WHERE _op = 'r' ORDER BY id") \
            == maria.rows()
        assert sqlite_rows(maria.tmp_path / "dst.db", f"SELECT count(*) FROM {target}") == [(len(maria.rows()),)]
        return
    assert maria.copied(columns, target) == maria.rows()
    maria.sql("UPDATE items SET name = 'renamed' WHERE id <= 3", "DELETE FROM items WHERE id = 100")
    record = run(edited)[1]
    assert record["note"] is None and record["rows_read"] == 3  # id 1 is gone: two updates, one delete
    assert maria.copied(columns, target) == maria.rows()


def test_mariadb_cdc_settings_that_do_not_invalidate_keep_streaming(maria: Maria) -> None:
    run(maria.job({}))
    maria.sql("UPDATE items SET qty = 0 WHERE id <= 6")
    job_file = maria.job({"check": {"max_age": "2h"}}, copy={"batch_rows": 300, "parallel": 3}, **HARMLESS)
    (maria.tmp_path / "inbox").mkdir()
    checked = copyjob("validate", job_file)
    assert checked.code == 0 and "note:" not in checked.stdout, checked.output
    assert status(job_file)["next_run"] == "stream"
    record = run(job_file)[1]
    assert record["mode"] == "cdc" and record["rows_read"] == 6 and record["note"] is None
    assert maria.copied() == maria.rows()
