"""The defaults (``mode: full``, ``update_method: append``) keep history: every run adds the source's rows
again, so the tables copyjob creates for append have no primary key (an ordinary index on the key instead).
A table the user created with a key still refuses them, with an error that says what to choose instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import copyjob, duckdb_rows, sqlite_rows, sqlite_script, write_job

SHOP = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL);
INSERT INTO orders VALUES (1, 'new'), (2, 'paid'), (3, 'sent');
"""


def default_job(tmp_path: Path, destination: str) -> Path:
    sqlite_script(tmp_path / "shop.db", SHOP)
    return write_job(tmp_path / "job.yaml", {
        "job": "shop", "source": {"url": "sqlite:///shop.db"}, "destination": {"url": destination},
        "tables": [{"name": "orders"}]})


@pytest.mark.parametrize("destination", ["sqlite:///wh.db", "duckdb:///wh.duckdb"])
def test_the_default_job_runs_twice_and_keeps_both_copies(tmp_path: Path, destination: str) -> None:
    job = default_job(tmp_path, destination)
    for _ in range(2):
        result = copyjob("run", job)
        assert result.code == 0, result.output
    sql = "SELECT id, status, count(*) FROM orders GROUP BY id, status ORDER BY id"
    rows = sqlite_rows(tmp_path / "wh.db", sql) if destination.startswith("sqlite") \
        else duckdb_rows(tmp_path / "wh.duckdb", sql)
    assert rows == [(1, "new", 2), (2, "paid", 2), (3, "sent", 2)]


def test_appending_into_a_table_with_a_primary_key_names_the_way_out(tmp_path: Path) -> None:
    job = default_job(tmp_path, "sqlite:///wh.db")
    sqlite_script(tmp_path / "wh.db", "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT);")
    assert copyjob("run", job).code == 0
    second = copyjob("run", job)
    assert second.code == 1
    for words in ("orders", "orders.id", "update_method: merge", "update_method: overwrite",
                  "truncate_before_full_load: true"):
        assert words in second.output, second.output
    assert sqlite_rows(tmp_path / "wh.db", "SELECT count(*) FROM orders") == [(3,)]


def test_cdc_append_tables_get_the_same_index_and_no_key(tmp_path: Path, pg_url: str) -> None:
    """CDC append keeps one row per change: its table has no primary key either, and the same ordinary index on
    the key columns."""
    from tests.pg_cdc import drop_slots, execute

    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text)", "INSERT INTO orders VALUES (1, 'new')")
    job = write_job(tmp_path / "job.yaml", {
        "job": "cdcappend_" + pg_url.rsplit("/", 1)[1], "source": {"url": pg_url},
        "destination": {"url": "sqlite:///wh.db"}, "copy": {"mode": "cdc", "update_method": "append"},
        "cdc": {"max_batch_delay": "50ms"}, "tables": [{"name": "orders"}]})
    try:
        assert (first := copyjob("run", job)).code == 0, first.output
        execute(pg_url, "UPDATE orders SET status = 'paid' WHERE id = 1")
        assert (second := copyjob("run", job)).code == 0, second.output
    finally:
        drop_slots(pg_url)
    db = tmp_path / "wh.db"
    assert sqlite_rows(db, "SELECT id, status, _op FROM orders ORDER BY _op") == [(1, "new", "r"), (1, "paid", "u")]
    assert sqlite_rows(db, "SELECT name FROM pragma_table_info('orders') WHERE pk > 0") == []
    indexes = sqlite_rows(db, "SELECT name, \"unique\" FROM pragma_index_list('orders')")
    assert [(unique, sqlite_rows(db, f"SELECT name FROM pragma_index_info('{name}')")) for name, unique in indexes] \
        == [(0, [("id",)])]
