"""``copyjob demo``: a sample SQLite shop database copied into DuckDB, first in full, then incrementally."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from rich.console import Console

JOB = """\
# A sample job: the shop's SQLite database into a DuckDB warehouse.
job: shop-to-warehouse
source:      {url: "sqlite:///${SHOP_DB}"}
destination: {url: "duckdb:///warehouse.duckdb"}
copy:
  mode: incremental
  update_method: merge
tables:
  - name: customers
    incremental_column: updated_at
  - name: products
    mode: full
    update_method: overwrite
  - name: orders
    incremental_column: updated_at
    columns: {customer_id: cust_id}
"""
VARIABLES = """\
default:
  SHOP_DB: shop.db
"""
STATUSES = ("new", "paid", "shipped", "delivered", "cancelled")


def make_shop(path: Path, customers: int = 500, orders: int = 20_000, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    con = sqlite3.connect(path)
    with con:
        con.executescript("""
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT,
                                    created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP);
            CREATE TABLE products (id INTEGER PRIMARY KEY, title TEXT NOT NULL, price NUMERIC(10,2));
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
                                 product_id INTEGER NOT NULL, amount NUMERIC(12,2) NOT NULL,
                                 status TEXT NOT NULL, updated_at TIMESTAMP NOT NULL);
        """)
        con.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", [
            (i, f"Customer {i}", f"c{i}@example.com", _ts(now - timedelta(days=400 - i % 365)),
             _ts(now - timedelta(days=i % 30))) for i in range(1, customers + 1)])
        con.executemany("INSERT INTO products VALUES (?, ?, ?)", [
            (i, f"Product {i}", str(Decimal(rng.randint(100, 99_999)) / 100)) for i in range(1, 51)])
        con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", [
            (i, rng.randint(1, customers), rng.randint(1, 50), str(Decimal(rng.randint(100, 500_000)) / 100),
             rng.choice(STATUSES), _ts(now - timedelta(minutes=orders - i))) for i in range(1, orders + 1)])
    con.close()


def new_activity(path: Path, orders: int = 20_000) -> None:
    """Some orders change status and new ones arrive, later than everything copied so far."""
    later = datetime(2026, 1, 2, tzinfo=UTC)
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE orders SET status = 'delivered', updated_at = ? WHERE id % 1000 = 0", (_ts(later),))
        con.executemany("INSERT INTO orders VALUES (?, 1, 1, '19.99', 'new', ?)",
                        [(orders + i, _ts(later + timedelta(seconds=i))) for i in range(1, 101)])
    con.close()


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def run_demo(directory: Path, console: Console) -> int:
    from copyjob.loader import load_job
    from copyjob.offsets import default_state_url, open_state_store
    from copyjob.runner import JobRun
    from copyjob.summary import print_run

    directory.mkdir(parents=True, exist_ok=True)
    for leftover in ("shop.db", "warehouse.duckdb", "warehouse.duckdb.wal", ".copyjob/state.db",
                     ".copyjob/state.db-wal", ".copyjob/state.db-shm"):
        (directory / leftover).unlink(missing_ok=True)
    job_file = directory / "shop-to-warehouse.yaml"
    job_file.write_text(JOB)
    (directory / "variables.yaml").write_text(VARIABLES)
    make_shop(directory / "shop.db")
    console.print(f"made {directory / 'shop.db'}: 500 customers, 50 products, 20,000 orders")
    loaded = load_job(job_file)
    worst = 0
    for step in ("first run: a full copy of every table", "second run, after new orders arrived: incremental"):
        if step.startswith("second"):
            new_activity(directory / "shop.db")
        console.rule(step)
        job_run = JobRun(loaded, lambda: open_state_store(default_state_url(loaded.path)))
        try:
            record = job_run.run()
        finally:
            job_run.close()
        print_run(console, record)
        worst = max(worst, 0 if record.status == "ok" else 1)
    console.print(f"\nThe job file is {job_file}; try: copyjob status {job_file}")
    return worst
