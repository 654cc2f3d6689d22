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


def test_another_source_table_for_the_same_target_starts_it_over(tmp_path: Path, source: Path) -> None:
    """``name:`` now reads another source table into the same target: its rows replace the old table's."""
    sqlite_script(source, SCHEMA.replace("events", "events_new"))
    sqlite_exec(source, "INSERT INTO events_new VALUES (?, ?, ?, ?)",
                [(i, 2_000_000 + i, i, f"new{i}") for i in range(5, 15)])
    first = job(tmp_path, {"incremental_column": "ts"})
    run(first)
    edited = job(tmp_path, {"name": "events_new", "target": "events", "incremental_column": "ts"})
    record = starts_over(edited, "source table changed: events → events_new")
    assert record["mode"] == "full" and record["rows_written"] == 10
    copied = "SELECT id, ts, seq, name FROM events ORDER BY id"
    assert sqlite_rows(tmp_path / "dst.db", copied) == sqlite_rows(source, copied.replace("events", "events_new"))


@pytest.mark.parametrize("modes", [("incremental", "full"), ("full", "incremental")], ids=lambda m: " → ".join(m))
def test_incremental_and_full_are_both_polled_so_the_table_keeps_going(tmp_path: Path, source: Path,
                                                                        modes: tuple[str, str]) -> None:
    """Both read by the same watermark rules (a full copy reads everything and records the watermark): an edit
    between them resets nothing; the next run is what the new mode does, and the table stays equal."""
    before, after = modes
    first = job(tmp_path, {"incremental_column": "ts"}, mode=before, update_method="merge")
    run(first)
    add(source, range(21, 26))
    edited = job(tmp_path, {"incremental_column": "ts"}, mode=after, update_method="merge")
    checked = copyjob("validate", edited)
    assert checked.code == 0 and "note:" not in checked.stdout, checked.output
    assert status(edited)["next_run"] == after
    record = run(edited)[1]
    assert record["mode"] == after and record["note"] is None
    assert record["rows_written"] == (25 if after == "full" else 6)  # merge reads the boundary row again
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, ts, seq, name FROM events ORDER BY id") \
        == source_rows(source)


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


def test_a_new_file_format_loads_the_set_again(tmp_path: Path) -> None:
    """The export under the same names turned from CSV into Parquet: the set is read again in its new format."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "in"
    folder.mkdir()
    parts = {n: [(n * 10 + i, f"x{n}{i}") for i in range(3)] for n in range(1, 4)}
    for n, part in parts.items():
        (folder / f"part-{n}").write_text("id,name\n" + "".join(f"{i},{name}\n" for i, name in part))

    def files_job(fmt: str) -> Path:
        return write_job(tmp_path / "job.yaml", {
            "job": "files", "source": {"url": "./in"}, "destination": {"url": "sqlite:///dst.db"},
            "copy": {"mode": "incremental", "update_method": "append"},
            "tables": [{"name": "things", "pattern": "part-*", "format": fmt}]})

    assert run(files_job("csv"))[1]["rows_written"] == 9
    for n, part in parts.items():
        ids, names = zip(*part, strict=True)
        pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "name": pa.array([f"{v}!" for v in names])}),
                       folder / f"part-{n}")
    record = starts_over(files_job("parquet"), "file format changed: csv → parquet")
    assert record["mode"] == "full" and record["rows_written"] == 9
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, name FROM things ORDER BY id") \
        == sorted((i, f"{name}!") for part in parts.values() for i, name in part)


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


@pytest.mark.parametrize("modes", [("incremental", "cdc"), ("cdc", "incremental")], ids=lambda m: " → ".join(m))
def test_between_polled_and_cdc_the_table_starts_over(tmp_path: Path, shop: str, pg_url2: str,
                                                      modes: tuple[str, str]) -> None:
    """A polled copy cannot see deletes and a change stream has no watermark: either way the table starts over
    (a snapshot, or a full copy) and ends equal to the source."""
    before, after = modes

    def mode_job(mode: str) -> Path:
        table = {"name": "public.orders", **({"incremental_column": "id"} if mode == "incremental" else {})}
        return write_job(tmp_path / "job.yaml", {
            "job": "edits_mode", "source": {"url": shop}, "destination": {"url": pg_url2},
            "copy": {"mode": mode, "update_method": "merge"}, "cdc": {"max_batch_delay": "50ms"},
            "tables": [table]})

    run(mode_job(before))
    execute(shop, "DELETE FROM orders WHERE id > 490")  # a deleted row a polled copy never sees
    run(mode_job(before))
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id <= 5", "DELETE FROM orders WHERE id <= 2")
    kinds, columns = ("polled → cdc", "id → none") if before == "incremental" else ("cdc → polled", "none → id")
    reason = f"mode changed: {kinds}; incremental column changed: {columns}"
    starts_over(mode_job(after), reason, "snapshot" if after == "cdc" else "full")
    assert table_fingerprint(pg_url2, "orders") == table_fingerprint(shop, "orders")
    execute(shop, "INSERT INTO orders SELECT g, 'late', 1 FROM generate_series(600, 605) g")
    assert run(mode_job(after))[1]["note"] is None
    assert table_fingerprint(pg_url2, "orders") == table_fingerprint(shop, "orders")


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


def test_kafka_another_source_table_replaces_the_target_once(tmp_path: Path, source: Path,
                                                             kafka_broker: KafkaBroker) -> None:
    """Through Kafka the new source is another topic: its first event (a new epoch) empties the target."""
    sqlite_script(source, SCHEMA.replace("events", "events_new"))
    sqlite_exec(source, "INSERT INTO events_new VALUES (?, ?, ?, ?)",
                [(i, 2_000_000 + i, i, f"new{i}") for i in range(5, 15)])
    run(kafka_job(tmp_path, kafka_broker, {"incremental_column": "ts"}, "append"))
    edited = kafka_job(tmp_path, kafka_broker, {"name": "events_new", "target": "events",
                                                "incremental_column": "ts"}, "append")
    record = starts_over(edited, "source table changed: events → events_new")
    assert record["mode"] == "full" and record["rows_written"] == 10
    copied = "SELECT id, ts, seq, name FROM events ORDER BY id"
    assert sqlite_rows(tmp_path / "dst.db", copied) == sqlite_rows(source, copied.replace("events", "events_new"))


@pytest.mark.parametrize("method", ["append", "merge"])
def test_kafka_reset_of_a_table_replaces_it_once(tmp_path: Path, source: Path, kafka_broker: KafkaBroker,
                                                 method: str) -> None:
    """``reset --table`` publishes the table again under a new epoch: the apply side replaces what it holds
    (an append table would otherwise hold every row twice) and goes on incrementally after it."""
    first = kafka_job(tmp_path, kafka_broker, {"incremental_column": "ts"}, method)
    run(first)
    add(source, range(21, 26))
    run(first)
    reset = copyjob("reset", first, "--table", "events")
    assert reset.code == 0, reset.output
    assert status(first)["next_run"] == "full"
    record = run(first)[1]
    assert record["mode"] == "full" and record["rows_written"] == 25
    dst = tmp_path / "dst.db"
    assert sqlite_rows(dst, "SELECT id, ts, seq, name FROM events ORDER BY id") == source_rows(source)
    add(source, range(26, 29))
    again = run(first)[1]
    assert again["mode"] == "incremental" and again["note"] is None
    assert sqlite_rows(dst, "SELECT id, ts, seq, name FROM events ORDER BY id") == source_rows(source)


def test_kafka_reset_of_the_job_with_capture_and_apply_apart(tmp_path: Path, source: Path,
                                                             kafka_broker: KafkaBroker) -> None:
    """The same with the two sides in two processes, and a reset of every table of the job."""
    job_file = kafka_job(tmp_path, kafka_broker, {"incremental_column": "ts"}, "append")

    def capture_then_apply() -> None:
        for command in ("capture", "apply"):
            done = copyjob(command, job_file, *(["--until-caught-up"] if command == "apply" else []))
            assert done.code == 0, done.output

    capture_then_apply()
    add(source, range(21, 26))
    capture_then_apply()
    assert copyjob("reset", job_file).code == 0
    capture_then_apply()
    dst = tmp_path / "dst.db"
    assert sqlite_rows(dst, "SELECT id, ts, seq, name FROM events ORDER BY id") == source_rows(source)
    add(source, range(26, 29))
    capture_then_apply()
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
    """MariaDB source tables (``name`` NOT NULL) and the job that copies them into SQLite."""

    def __init__(self, tmp_path: Path, server: MariadbServer, url: str, transport: str, broker: Any,
                 tables: list[str]) -> None:
        self.tmp_path, self.server, self.url, self.transport, self.broker = tmp_path, server, url, transport, broker
        for t in tables:
            self.sql(f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INT)",
                     f"INSERT INTO {t} VALUES " + ",".join(f"({i}, 'item {i}', {i % 7})" for i in range(1, 201)))

    def sql(self, *statements: str) -> None:
        self.server.execute_all(self.url.rsplit("/", 1)[1], *statements)

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.server.execute(f"SELECT id, name, qty FROM {table} ORDER BY id",
                                                      self.url.rsplit("/", 1)[1])]

    def job(self, tables: list[dict[str, Any]], copy: dict[str, Any] | None = None, **job_level: Any) -> Path:
        kafka = {"transport": "kafka", "kafka": {"bootstrap_servers": self.broker.bootstrap,
                                                 "topic_prefix": prefix(self.tmp_path)}} \
            if self.transport == "kafka" else {}
        return write_job(self.tmp_path / "job.yaml", {
            "job": "edits_maria", "source": {"url": self.url}, "destination": {"url": "sqlite:///dst.db"},
            "copy": {"mode": "cdc", "update_method": "merge", **(copy or {})}, "cdc": {"max_batch_delay": "50ms"},
            "tables": tables, **kafka, **job_level})

    def copied(self, columns: str, table: str, where: str = "") -> list[tuple[Any, ...]]:
        return sqlite_rows(self.tmp_path / "dst.db", f"SELECT {columns} FROM {table} {where} ORDER BY id")


MARIA_EDITS: dict[str, tuple[dict[str, Any], str, str, str]] = {
    "by_key": ({"key": ["id", "qty"]}, "key changed: none → id, qty", "id, name, qty", "by_key"),
    "by_target": ({"target": "by_target_v2"}, "target table changed: by_target → by_target_v2", "id, name, qty",
                  "by_target_v2"),
    "by_rename": ({"columns": {"name": "label"}}, "column mapping changed: none → name: label", "id, label, qty",
                  "by_rename"),
    "by_method": ({"update_method": "append"}, "update method changed: merge → append", "id, name, qty",
                  "by_method"),
}
"""Per source table, its edit (a key, a target, a NOT NULL column renamed, merge → append), the reason, and the
columns and table it lands in after the edit."""
KEPT = "kept"
"""A table whose edits are harmless (its ``check``, and the job's schedules, triggers, batch sizes)."""


@pytest.mark.parametrize("transport", ["direct", "kafka"])
def test_mariadb_cdc_edits_start_each_table_over_and_harmless_ones_keep_streaming(
        request: pytest.FixtureRequest, tmp_path: Path, mariadb_server: MariadbServer, mariadb_url: str,
        transport: str) -> None:
    """Every kind of edit at once, one table each, in one job: each edited table starts over (a snapshot) on
    its own, says why, and ends equal to the source; the table edited harmlessly keeps streaming."""
    pytest.importorskip("pymysqlreplication")
    broker = request.getfixturevalue("kafka_broker") if transport == "kafka" else None
    names = [*MARIA_EDITS, KEPT]
    maria = Maria(tmp_path, mariadb_server, mariadb_url, transport, broker, names)
    first = maria.job([{"name": n} for n in names])
    run(first)
    for n in names:
        maria.sql(f"UPDATE {n} SET qty = qty + 10 WHERE id <= 20", f"DELETE FROM {n} WHERE id > 190")
    assert {t: r["rows_read"] for t, r in run_all(first).items()} == dict.fromkeys(names, 30)
    assert all(maria.copied("id, name, qty", n) == maria.rows(n) for n in names)
    for n in names:
        maria.sql(f"INSERT INTO {n} VALUES (500, 'late', 1)", f"DELETE FROM {n} WHERE id = 1")
    edited = maria.job([{"name": n, **MARIA_EDITS[n][0]} for n in MARIA_EDITS]
                       + [{"name": KEPT, "check": {"max_age": "2h"}}],
                       copy={"batch_rows": 300, "parallel": 3}, **HARMLESS)
    (tmp_path / "inbox").mkdir()

    checked = copyjob("validate", edited)
    assert checked.code == 0, checked.output
    notes = [line for line in checked.stdout.splitlines() if line.startswith("note:")]
    assert sorted(notes) == sorted(f"note: {target}: the next run starts it over ({reason})"
                                   for _, reason, _, target in MARIA_EDITS.values())
    shown = {t["table"]: t["next_run"] for t in json.loads(copyjob("status", edited, "--json").stdout)["tables"]}
    assert shown == {**{target: f"snapshot ({reason})" for _, reason, _, target in MARIA_EDITS.values()},
                     KEPT: "stream"}
    records = run_all(edited)
    assert {t: r["note"] for t, r in records.items()} == {**{target: reason for _, reason, _, target
                                                             in MARIA_EDITS.values()}, KEPT: None}
    assert records[KEPT]["mode"] == "cdc" and records[KEPT]["rows_read"] == 2  # the insert and the delete
    assert maria.copied("id, name, qty", KEPT) == maria.rows(KEPT)
    for n, (_, _, columns, target) in MARIA_EDITS.items():
        if n == "by_method":  # the snapshot's rows, and nothing of the merge table before
            assert maria.copied(columns, target, "WHERE _op = 'r'") == maria.rows(n)
            assert maria.copied("count(*)", target) == [(len(maria.rows(n)),)]
        else:
            assert maria.copied(columns, target) == maria.rows(n), n

    for n in names:
        maria.sql(f"UPDATE {n} SET name = 'renamed' WHERE id <= 3", f"DELETE FROM {n} WHERE id = 100")
    records = run_all(edited)
    # id 1 is gone: two updates, one delete
    assert {t: (r["note"], r["rows_read"]) for t, r in records.items()} == {
        **{target: (None, 3) for _, _, _, target in MARIA_EDITS.values()}, KEPT: (None, 3)}
    for n, (_, _, columns, target) in MARIA_EDITS.items():
        if n == "by_method":
            assert maria.copied("count(*)", target, "WHERE _op IN ('u', 'd')") == [(3,)]
        else:
            assert maria.copied(columns, target) == maria.rows(n), n
    assert maria.copied("id, name, qty", KEPT) == maria.rows(KEPT)


def run_all(job_file: Path) -> dict[str, dict[str, Any]]:
    """Like :func:`run`, every table's record by its name."""
    result = copyjob("run", job_file, "--no-progress")
    assert result.code == 0, result.output
    latest: dict[str, Any] = json.loads(copyjob("history", job_file, "--json", "--limit", "1").stdout)[0]
    return {t["table"]: t for t in latest["tables"]}
