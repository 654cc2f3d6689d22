"""Stored generated columns (``GENERATED ALWAYS AS (expr) STORED``) of a PostgreSQL source. PostgreSQL's change
stream (pgoutput) leaves them out, so a CDC copy would write NULL for every row changed after the snapshot. A
PostgreSQL destination creates them generated and copyjob never writes them (every row is computed there, full
loads and changes alike); a destination that cannot compute them refuses a cdc table that has them before
anything runs (exit 2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.copyjob.test_kafka_pipeline import kafka_job
from tests.helpers import copyjob, sqlite_rows, write_job
from tests.pg_cdc import drop_slots, execute
from tests.services.kafka import KafkaBroker
from tests.services.mariadb import MariadbServer

ITEMS = ("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, price numeric(10,2) NOT NULL, "
         "total numeric GENERATED ALWAYS AS (qty * price) STORED)")


@pytest.fixture
def items(pg_url: str) -> Iterator[str]:
    execute(pg_url, ITEMS, "INSERT INTO items (id, qty, price) VALUES (1, 2, 1.50), (2, 3, 10.00)")
    yield pg_url
    drop_slots(pg_url)


def job(tmp_path: Path, src: str, dst: str, **copy: Any) -> Path:
    name = "gen_" + src.rsplit("/", 1)[1]
    return write_job(tmp_path / "job.yaml", {
        "job": name, "source": {"url": src}, "destination": {"url": dst}, "copy": copy,
        "cdc": {"max_batch_delay": "50ms"}, "tables": [{"name": "items"}]})


def run_ok(path: Path) -> None:
    result = copyjob("run", path, "--no-progress")
    assert result.code == 0, result.output


def totals(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        return con.execute("SELECT id, qty, price, total, total = qty * price FROM items ORDER BY id").fetchall()


def generated_in(url: str) -> str:
    with psycopg.connect(url) as con:
        row = con.execute("SELECT attgenerated::text || ':' || pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                          "JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                          "WHERE a.attrelid = 'items'::regclass AND a.attname = 'total'").fetchone()
    return row[0] if row else ""


def test_cdc_into_postgresql_computes_the_column_for_changed_rows(tmp_path: Path, items: str,
                                                                  pg_url2: str) -> None:
    path = job(tmp_path, items, pg_url2, mode="cdc", update_method="merge")
    run_ok(path)  # the snapshot
    execute(items, "INSERT INTO items (id, qty, price) VALUES (3, 4, 2.25)", "UPDATE items SET qty = 5 WHERE id = 1")
    run_ok(path)  # the changes
    assert totals(pg_url2) == totals(items)
    assert all(row[4] for row in totals(pg_url2)) and len(totals(pg_url2)) == 3
    assert generated_in(pg_url2) == "s:((qty)::numeric * price)"


def test_cdc_into_a_table_made_with_a_plain_column_is_refused(tmp_path: Path, items: str, pg_url2: str) -> None:
    execute(pg_url2, "CREATE TABLE items (id int PRIMARY KEY, qty int, price numeric(10,2), total numeric)")
    result = copyjob("run", job(tmp_path, items, pg_url2, mode="cdc", update_method="merge"))
    assert result.code == 1
    for words in ("items", "total", "generated at the source but plain", "drop the destination table"):
        assert words in result.output, result.output
    with psycopg.connect(pg_url2) as con:
        assert con.execute("SELECT count(*) FROM items").fetchone() == (0,)


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_cdc_through_kafka_into_postgresql_computes_the_column(tmp_path: Path, kafka_broker: KafkaBroker,
                                                               items: str, pg_url2: str, fmt: str) -> None:
    path, _ = kafka_job(tmp_path, kafka_broker, items, pg_url2, [{"name": "items"}], mode="cdc",
                        update_method="merge", kafka={"format": fmt})
    run_ok(path)  # the snapshot: the envelope's schema says the column is generated
    execute(items, "INSERT INTO items (id, qty, price) VALUES (3, 4, 2.25)", "UPDATE items SET qty = 5 WHERE id = 1")
    run_ok(path)
    assert totals(pg_url2) == totals(items) and len(totals(pg_url2)) == 3
    assert generated_in(pg_url2).startswith("s:")


@pytest.mark.parametrize("method", ["append", "merge", "overwrite"])
def test_full_copies_into_postgresql_create_the_column_generated(tmp_path: Path, items: str, pg_url2: str,
                                                                 method: str) -> None:
    path = job(tmp_path, items, pg_url2, mode="full", update_method=method)
    run_ok(path)
    execute(items, "UPDATE items SET price = 3.00 WHERE id = 2")
    run_ok(path)  # a second load into the table with the generated column
    rows = totals(pg_url2)
    assert all(row[4] for row in rows)
    assert {r[:4] for r in rows} == {r[:4] for r in totals(items)} | (
        {(2, 3, 10, 30)} if method == "append" else set())
    assert generated_in(pg_url2).startswith("s:")


def test_full_copies_elsewhere_carry_the_stored_values(tmp_path: Path, items: str) -> None:
    run_ok(job(tmp_path, items, "sqlite:///out.db", mode="full"))
    assert sqlite_rows(tmp_path / "out.db", "SELECT id, total FROM items ORDER BY id") == [(1, "3.00"), (2, "30.00")]


def test_cdc_into_a_destination_that_cannot_compute_it_is_refused_up_front(tmp_path: Path, items: str) -> None:
    path = job(tmp_path, items, "sqlite:///out.db", mode="cdc", update_method="merge")
    checked = copyjob("validate", path, "--connect")
    result = copyjob("run", path)
    for outcome in (checked, result):
        assert outcome.code == 2, outcome.output
        for words in ("job.yaml:", "items", "total", "generated", "mode full or incremental", "into PostgreSQL"):
            assert words in outcome.output, outcome.output
    assert not (tmp_path / "out.db").exists() or sqlite_rows(
        tmp_path / "out.db", "SELECT count(*) FROM sqlite_master WHERE name = 'items'") == [(0,)]


# ---------------------------------------------------------------- MariaDB sources


def test_mariadb_virtual_and_stored_columns_stay_right_under_cdc(tmp_path: Path, mariadb_server: MariadbServer,
                                                                 mariadb_url: str, pg_url: str) -> None:
    """MariaDB's binlog row images (binlog_row_image=FULL) carry the values of VIRTUAL and STORED generated
    columns: they reach the destination as plain columns with the right values, snapshot and changes alike."""
    database = mariadb_url.rsplit("/", 1)[1]
    mariadb_server.execute_all(
        database, "CREATE TABLE items (id INT PRIMARY KEY, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, "
        "total DECIMAL(12,2) AS (qty * price) STORED, label VARCHAR(40) AS (CONCAT('#', id)) VIRTUAL)",
        "INSERT INTO items (id, qty, price) VALUES (1, 2, 1.50), (2, 3, 10.00)")
    path = write_job(tmp_path / "job.yaml", {
        "job": "mygen", "source": {"url": mariadb_url}, "destination": {"url": pg_url},
        "copy": {"mode": "cdc", "update_method": "merge"}, "cdc": {"max_batch_delay": "100ms"},
        "tables": [{"name": "items"}]})
    run_ok(path)
    mariadb_server.execute_all(database, "INSERT INTO items (id, qty, price) VALUES (3, 4, 2.25)",
                               "UPDATE items SET qty = 5 WHERE id = 1")
    run_ok(path)
    with psycopg.connect(pg_url) as con:
        got = con.execute("SELECT id, total, label FROM items ORDER BY id").fetchall()
    assert [(i, str(t), label) for i, t, label in got] == [(1, "7.50", "#1"), (2, "30.00", "#2"), (3, "9.00", "#3")]
