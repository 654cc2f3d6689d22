"""Runs end to end through the real CLI, SQLite source into DuckDB: modes, update methods, state, history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import copyjob, duckdb_rows, sqlite_exec, sqlite_rows, sqlite_script, write_job

SCHEMA = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, amount NUMERIC(12,2),
                     status TEXT, updated_at TIMESTAMP);
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, updated_at TIMESTAMP);
"""


def ts(day: int, second: int = 0) -> str:
    return f"2026-01-{day:02d} 00:00:{second:02d}.000000"


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    db = tmp_path / "shop.db"
    sqlite_script(db, SCHEMA)
    sqlite_exec(db, "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                [(i, i % 7, f"{i}.50", "new", ts(1, i % 60)) for i in range(1, 101)])
    sqlite_exec(db, "INSERT INTO customers VALUES (?, ?, ?)", [(i, f"c{i}", ts(1)) for i in range(1, 8)])
    return db


def job(tmp_path: Path, **copy: Any) -> Path:
    tables = copy.pop("tables", None) or [
        {"name": "orders", "incremental_column": "updated_at"},
        {"name": "customers", "incremental_column": "updated_at"},
    ]
    return write_job(tmp_path / "job.yaml", {
        "job": "shop", "source": {"url": "sqlite:///shop.db"}, "destination": {"url": "duckdb:///wh.duckdb"},
        "copy": copy, "tables": tables})


def dest(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    return duckdb_rows(tmp_path / "wh.duckdb", sql)


def same_orders(tmp_path: Path, shop: Path) -> None:
    src = sqlite_rows(shop, "SELECT id, customer_id, CAST(amount AS TEXT), status FROM orders ORDER BY id")
    got = dest(tmp_path, "SELECT id, customer_id, CAST(amount AS VARCHAR), status FROM orders ORDER BY id")
    assert [(a, b, f"{float(c):.2f}", d) for a, b, c, d in src] == got


def test_incremental_merge_first_full_then_only_changes(tmp_path: Path, shop: Path) -> None:
    j = job(tmp_path, mode="incremental", update_method="merge")
    first = copyjob("run", j)
    assert first.code == 0, first.output
    assert "full" in first.stdout and "100" in first.stdout
    same_orders(tmp_path, shop)
    sqlite_exec(shop, "UPDATE orders SET status = 'paid', updated_at = ? WHERE id <= 10", (ts(2),))
    sqlite_exec(shop, "INSERT INTO orders VALUES (?, ?, ?, ?, ?)", [(i, 1, "1.00", "new", ts(3)) for i in
                                                                     range(101, 106)])
    second = copyjob("run", j)
    assert second.code == 0, second.output
    history = json.loads(copyjob("history", j, "--json").stdout)
    latest = {t["table"]: t for t in history[0]["tables"]}
    assert latest["orders"]["mode"] == "incremental"
    assert latest["orders"]["rows_read"] == 16  # 15 changed + the boundary row, re-read under merge
    assert latest["orders"]["watermark_after"].startswith("2026-01-03")
    same_orders(tmp_path, shop)
    assert len(history) == 2 and history[1]["tables"][0]["mode"] == "full"


def test_status_shows_watermark_and_next_run(tmp_path: Path, shop: Path) -> None:
    j = job(tmp_path, mode="incremental", update_method="merge")
    before = json.loads(copyjob("status", j, "--json").stdout)
    assert {t["next_run"] for t in before["tables"]} == {"full"}
    assert {t["last_outcome"] for t in before["tables"]} == {None}
    assert copyjob("run", j).code == 0
    after = json.loads(copyjob("status", j, "--json").stdout)
    orders = next(t for t in after["tables"] if t["table"] == "orders")
    assert orders["next_run"] == "incremental" and orders["last_outcome"] == "ok"
    assert orders["watermark"].startswith("2026-01-01T00:00:59")
    text = copyjob("status", j)
    assert text.code == 0 and "incremental" in text.stdout


def test_append_incremental_never_doubles(tmp_path: Path, shop: Path) -> None:
    j = job(tmp_path, mode="incremental", update_method="append")
    assert copyjob("run", j).code == 0
    assert copyjob("run", j).code == 0  # nothing new: nothing appended
    assert dest(tmp_path, "SELECT count(*) FROM orders") == [(100,)]
    sqlite_exec(shop, "INSERT INTO orders VALUES (101, 1, '2.00', 'new', ?)", (ts(2),))
    assert copyjob("run", j).code == 0
    assert dest(tmp_path, "SELECT count(*), count(DISTINCT id) FROM orders") == [(101, 101)]


def test_merge_rereads_the_boundary(tmp_path: Path, shop: Path) -> None:
    """A row committed later with the same watermark value as the last one copied is still copied."""
    j = job(tmp_path, mode="incremental", update_method="merge")
    assert copyjob("run", j).code == 0
    sqlite_exec(shop, "INSERT INTO orders VALUES (500, 1, '5.00', 'late', ?)", (ts(1, 59),))
    assert copyjob("run", j).code == 0
    assert dest(tmp_path, "SELECT status FROM orders WHERE id = 500") == [("late",)]
    assert dest(tmp_path, "SELECT count(*) FROM orders") == [(101,)]


def test_null_watermarks_copied_in_full_and_reported_incrementally(tmp_path: Path, shop: Path) -> None:
    sqlite_exec(shop, "UPDATE orders SET updated_at = NULL WHERE id IN (1, 2, 3)")
    j = job(tmp_path, mode="incremental", update_method="merge")
    assert copyjob("run", j).code == 0
    assert dest(tmp_path, "SELECT count(*) FROM orders WHERE updated_at IS NULL") == [(3,)]
    sqlite_exec(shop, "INSERT INTO orders VALUES (200, 1, '1.00', 'new', NULL)")
    second = copyjob("run", j)
    assert second.code == 0
    assert "4 rows have a NULL incremental column" in second.stdout
    history = json.loads(copyjob("history", j, "--json", "--limit", "1").stdout)
    assert next(t for t in history[0]["tables"] if t["table"] == "orders")["null_watermark_rows"] == 4


def test_reset_makes_the_next_run_full_and_truncate_empties_first(tmp_path: Path, shop: Path) -> None:
    j = job(tmp_path, mode="incremental", update_method="append", truncate_before_full_load=True)
    assert copyjob("run", j).code == 0
    out = copyjob("reset", j, "--table", "orders")
    assert out.code == 0 and "orders" in out.stdout
    status = {t["table"]: t for t in json.loads(copyjob("status", j, "--json").stdout)["tables"]}
    assert status["orders"]["next_run"] == "full" and status["customers"]["next_run"] == "incremental"
    again = copyjob("run", j)
    assert again.code == 0
    assert dest(tmp_path, "SELECT count(*), count(DISTINCT id) FROM orders") == [(100, 100)]
    runs = json.loads(copyjob("history", j, "--json", "--limit", "1").stdout)
    assert {t["table"]: t["mode"] for t in runs[0]["tables"]} == {"orders": "full", "customers": "incremental"}


def test_full_overwrite_replaces_contents(tmp_path: Path, shop: Path) -> None:
    j = job(tmp_path, mode="full", update_method="overwrite")
    assert copyjob("run", j).code == 0
    sqlite_exec(shop, "DELETE FROM orders WHERE id > 50")
    assert copyjob("run", j).code == 0
    assert dest(tmp_path, "SELECT count(*), max(id) FROM orders") == [(50, 50)]


def test_full_append_twice_appends_twice_without_a_key(tmp_path: Path, shop: Path) -> None:
    sqlite_script(shop, "CREATE TABLE events (at TIMESTAMP, what TEXT); INSERT INTO events VALUES "
                        "('2026-01-01 00:00:00', 'a'), ('2026-01-01 00:00:01', 'b');")
    j = job(tmp_path, mode="full", update_method="append", tables=[{"name": "events"}])
    assert copyjob("run", j).code == 0
    assert copyjob("run", j).code == 0
    assert dest(tmp_path, "SELECT what, count(*) FROM events GROUP BY what ORDER BY what") == [("a", 2), ("b", 2)]


def test_rename_and_target(tmp_path: Path, shop: Path) -> None:
    j = job(tmp_path, mode="full", update_method="merge",
            tables=[{"name": "orders", "target": "sales", "columns": {"customer_id": "cust_id"}}])
    assert copyjob("run", j).code == 0
    assert dest(tmp_path, "SELECT count(*), sum(cust_id) FROM sales") == \
        sqlite_rows(shop, "SELECT count(*), sum(customer_id) FROM orders")


def test_column_added_at_source_is_added_at_destination(tmp_path: Path, shop: Path) -> None:
    j = job(tmp_path, mode="incremental", update_method="merge")
    assert copyjob("run", j).code == 0
    sqlite_exec(shop, "ALTER TABLE orders ADD COLUMN note TEXT")
    sqlite_exec(shop, "UPDATE orders SET note = 'hello', updated_at = ? WHERE id = 7", (ts(5),))
    assert copyjob("run", j).code == 0
    assert dest(tmp_path, "SELECT note FROM orders WHERE id = 7") == [("hello",)]
    assert dest(tmp_path, "SELECT count(*) FROM orders WHERE note IS NULL") == [(99,)]


def test_failed_table_keeps_its_state_and_others_complete(tmp_path: Path, shop: Path) -> None:
    import duckdb

    j = job(tmp_path, mode="incremental", update_method="merge")
    assert copyjob("run", j).code == 0
    before = {t["table"]: t for t in json.loads(copyjob("status", j, "--json").stdout)["tables"]}
    # the destination table gains a NOT NULL column the source does not fill: every load into it fails
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("ALTER TABLE customers ADD COLUMN must INTEGER DEFAULT 1")
    con.execute("ALTER TABLE customers ALTER COLUMN must DROP DEFAULT")
    con.execute("ALTER TABLE customers ALTER COLUMN must SET NOT NULL")
    con.close()
    sqlite_exec(shop, "UPDATE customers SET name = 'changed', updated_at = ? WHERE id = 1", (ts(9),))
    sqlite_exec(shop, "UPDATE orders SET status = 'changed', updated_at = ? WHERE id = 1", (ts(9),))
    failed = copyjob("run", j)
    assert failed.code == 1, failed.output
    assert "customers" in failed.stdout and "failed" in failed.stdout
    after = {t["table"]: t for t in json.loads(copyjob("status", j, "--json").stdout)["tables"]}
    assert after["customers"]["watermark"] == before["customers"]["watermark"]
    assert after["customers"]["last_outcome"] == "failed" and after["customers"]["last_error"]
    assert after["orders"]["last_outcome"] == "ok" and after["orders"]["watermark"].startswith("2026-01-09")
    assert dest(tmp_path, "SELECT status FROM orders WHERE id = 1") == [("changed",)]
    assert dest(tmp_path, "SELECT name FROM customers WHERE id = 1") == [("c1",)]
    # fix the destination: the next run copies the same change again
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("ALTER TABLE customers DROP COLUMN must")
    con.close()
    assert copyjob("run", j).code == 0
    assert dest(tmp_path, "SELECT name FROM customers WHERE id = 1") == [("changed",)]


def test_table_option_runs_only_that_table(tmp_path: Path, shop: Path) -> None:
    j = job(tmp_path, mode="full", update_method="overwrite")
    assert copyjob("run", j, "--table", "customers").code == 0
    assert dest(tmp_path, "SELECT table_name FROM information_schema.tables WHERE table_name IN "
                          "('orders', 'customers')") == [("customers",)]
    bad = copyjob("run", j, "--table", "nope")
    assert bad.code == 2 and "--table nope" in bad.stderr


def test_missing_source_table_is_exit_2_and_writes_nothing(tmp_path: Path, shop: Path) -> None:
    j = job(tmp_path, tables=[{"name": "orders"}, {"name": "ordres"}])
    out = copyjob("run", j)
    assert out.code == 2
    assert f"{j}:9: tables[1].name:" in out.stderr and "ordres" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "wh.duckdb").exists() and not (tmp_path / ".copyjob").exists()


@pytest.mark.parametrize(("table", "field", "words"), [
    ({"name": "orders", "incremental_column": "changed_at", "mode": "incremental"}, "incremental_column",
     "'changed_at' is not a column"),
    ({"name": "orders", "key": ["order_no"], "update_method": "merge"}, "key", "'order_no' is not a column"),
    ({"name": "orders", "columns": {"colour": "color"}}, "columns", "'colour' is not a column"),
])
def test_unknown_columns_are_exit_2(tmp_path: Path, shop: Path, table: dict[str, Any], field: str,
                                    words: str) -> None:
    j = job(tmp_path, tables=[table])
    out = copyjob("run", j)
    assert out.code == 2, out.output
    assert f"tables[0].{field}:" in out.stderr and words in out.stderr
    assert not (tmp_path / "wh.duckdb").exists()


def test_merge_without_any_key_is_exit_2(tmp_path: Path, shop: Path) -> None:
    sqlite_script(shop, "CREATE TABLE nokey (a INTEGER, b TEXT);")
    out = copyjob("run", job(tmp_path, update_method="merge", tables=[{"name": "nokey"}]))
    assert out.code == 2 and "merge needs a key" in out.stderr and "tables[0].key" in out.stderr


def test_validate(tmp_path: Path, shop: Path) -> None:
    j = job(tmp_path, mode="incremental", update_method="merge")
    assert copyjob("validate", j).code == 0
    assert copyjob("validate", j, "--connect").code == 0
    bad = job(tmp_path, tables=[{"name": "ordres"}])
    assert copyjob("validate", bad).code == 0  # the file itself is fine
    out = copyjob("validate", bad, "--connect")
    assert out.code == 2 and "ordres" in out.stderr


def test_unreachable_source_fails_the_tables_and_hides_the_password(tmp_path: Path) -> None:
    j = write_job(tmp_path / "job.yaml", {
        "job": "pg", "source": {"url": "postgresql://app:TopSecret99@127.0.0.1:1/shop"},
        "destination": {"url": "duckdb:///wh.duckdb"}, "tables": [{"name": "public.orders"}]})
    out = copyjob("run", j)
    assert out.code == 1, out.output
    assert "TopSecret99" not in out.output and "***" in out.output
    hist = copyjob("history", j, "--json")
    assert "TopSecret99" not in hist.output and json.loads(hist.stdout)[0]["status"] == "failed"


def test_demo_runs(tmp_path: Path) -> None:
    out = copyjob("demo", "--dir", tmp_path / "demo")
    assert out.code == 0, out.output
    assert "20,000" in out.stdout and "incremental" in out.stdout
    rows = duckdb_rows(tmp_path / "demo" / "warehouse.duckdb", "SELECT count(*) FROM orders")
    assert rows == [(20_100,)]
    # what a user tries next: the copy verifies equal, the rows stored at the watermark included (SQLite keeps
    # timestamps as text with microseconds; the watermark was bound without them and left those rows out)
    verified = copyjob("verify", tmp_path / "demo" / "shop-to-warehouse.yaml")
    assert verified.code == 0, verified.output
    assert "customers: equal (500 rows" in verified.stdout and "orders: equal (20100 rows" in verified.stdout


def test_a_second_run_of_the_same_job_is_skipped_while_one_holds_the_lock(tmp_path: Path, shop: Path) -> None:
    from copyjob.offsets import default_state_url, open_state_store

    from copyjob.loader import load_job

    j = job(tmp_path, mode="full", update_method="overwrite")
    store = open_state_store(default_state_url(j.resolve()))
    lock = store.acquire_lock(load_job(j).scope, "a test holding the lock")  # the job in its destination
    assert lock is not None
    try:
        out = copyjob("run", j, "--wait", "0.5")
        assert out.code == 3, out.output
        assert "another run of this job is in progress" in out.stdout
        assert "a test holding the lock" in out.stdout
    finally:
        lock.release()
        store.close()
    history = json.loads(copyjob("history", j, "--json").stdout)
    assert history[0]["status"] == "skipped"
    assert copyjob("run", j).code == 0
