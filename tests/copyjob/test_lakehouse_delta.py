"""PostgreSQL → Delta Lake tables through the real CLI: full (append, overwrite, merge), incremental, file sets,
CDC (inserts, updates, deletes, a key change, an unchanged TOAST value) direct and through Kafka, a SIGKILL
between the table commit and the state save, S3 on a local moto server, ``partition_by:`` and
``copyjob maintain``. After each run the table is read by two independent readers (deltalake's own reader and
pyarrow.parquet over the data files of the current version) and compared with the source row by row."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import copyjob, write_job
from tests.pg_cdc import drop_slots, execute, rows
from tests.services.kafka import KafkaBroker

pytest.importorskip("deltalake")

_ids = itertools.count()
COLUMNS = ["id", "status", "amount", "note", "updated"]


@pytest.fixture
def shop(pg_url: str) -> str:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2), "
            "note text, updated timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00')",
            "INSERT INTO orders (id, status, amount) SELECT g, 'new', g * 1.5 FROM generate_series(1, 500) g")
    return pg_url


@pytest.fixture
def slots(pg_url: str) -> Iterator[None]:
    yield
    drop_slots(pg_url)


def job_file(tmp_path: Path, src: str, mode: str, method: str, *, options: dict[str, str] | None = None,
             dst: str = "./lake", table: dict[str, Any] | None = None, **extra: Any) -> Path:
    n = next(_ids)
    job: dict[str, Any] = {
        "job": f"delta{n}", "source": {"url": src},
        "destination": {"url": dst, "format": "delta", **({"options": options} if options else {})},
        "copy": {"mode": mode, "update_method": method}, "tables": [table or {"name": "orders"}], **extra}
    if mode == "cdc":
        job["cdc"] = {"max_batch_delay": "50ms"}
    return write_job(tmp_path / f"job{n}.yaml", job)


def ok(*args: str | Path, env: dict[str, str] | None = None) -> str:
    result = copyjob(*args, "--no-progress", env=env) if args[0] == "run" else copyjob(*args, env=env)
    assert result.code == 0, result.output
    return result.stdout


# ---------------------------------------------------------------- independent readers


def delta_table(lake: Path | str, name: str = "orders", storage_options: dict[str, str] | None = None) -> Any:
    from deltalake import DeltaTable

    return DeltaTable(f"{lake}/{name}", storage_options=storage_options)


def _normalise(table: pa.Table, columns: list[str]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r[c] for c in columns) for r in table.select(columns).to_pylist())


def read_both(lake: Path, columns: list[str], name: str = "orders") -> list[tuple[Any, ...]]:
    """The rows as deltalake reads them; asserts that pyarrow.parquet over the current data files (partition
    values taken from the log, as every reader does) agrees."""
    table = delta_table(lake, name)
    read = pa.table(table.to_pyarrow_table(columns=columns))
    partitioned = table.metadata().partition_columns
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    parts = []
    for action in actions:
        part = pq.read_table(f"{lake}/{name}/{action['path']}", columns=[c for c in columns if c not in partitioned])
        for c in partitioned:
            if c in columns:
                value = pa.array([action[f"partition.{c}"]] * part.num_rows).cast(read.schema.field(c).type)
                part = part.append_column(c, value)
        parts.append(part)
    direct = _normalise(pa.concat_tables(parts, promote_options="permissive"), columns) if parts else []
    assert direct == _normalise(read, columns)
    return direct


def source_rows(url: str, columns: list[str], table: str = "orders") -> list[tuple[Any, ...]]:
    return sorted(rows(url, f"SELECT {', '.join(columns)} FROM {table}"))


def assert_equal(src: str, lake: Path, columns: list[str] = COLUMNS) -> None:
    assert read_both(lake, columns) == source_rows(src, columns)


# ---------------------------------------------------------------- full and incremental


@pytest.mark.parametrize("method", ["append", "overwrite", "merge"])
def test_full_copy_with_each_update_method(tmp_path: Path, shop: str, method: str) -> None:
    job = job_file(tmp_path, shop, "full", method)
    ok("run", job)
    assert_equal(shop, tmp_path / "lake")
    if method == "append":  # a full append keeps every run's rows
        ok("run", job)
        assert read_both(tmp_path / "lake", ["id"]) == sorted([(i,) for i in range(1, 501)] * 2)
        return
    execute(shop, "UPDATE orders SET status = 'paid', note = 'n' WHERE id % 7 = 0",
            "DELETE FROM orders WHERE id % 11 = 0", "INSERT INTO orders (id, status) VALUES (1000, 'late')")
    ok("run", job)
    if method == "overwrite":
        assert_equal(shop, tmp_path / "lake")
    else:  # merge keeps the rows deleted at the source (a full merge upserts, it does not delete)
        gone = {(i,) for i in range(11, 501, 11)}
        assert set(read_both(tmp_path / "lake", ["id"])) - gone == set(source_rows(shop, ["id"]))
        assert set(read_both(tmp_path / "lake", COLUMNS)) >= set(source_rows(shop, COLUMNS))


def test_incremental_merge_picks_up_changed_rows(tmp_path: Path, shop: str) -> None:
    job = job_file(tmp_path, shop, "incremental", "merge", table={"name": "orders", "incremental_column": "updated"})
    ok("run", job)
    assert_equal(shop, tmp_path / "lake")
    execute(shop, "UPDATE orders SET status = 'paid', updated = '2024-02-01 00:00:00+00' WHERE id <= 20",
            "INSERT INTO orders (id, status, updated) VALUES (501, 'new', '2024-02-02 00:00:00+00')")
    ok("run", job)
    assert_equal(shop, tmp_path / "lake")
    version = delta_table(tmp_path / "lake").version()
    ok("run", job)  # nothing new: the rows stay, one commit for the marker
    assert_equal(shop, tmp_path / "lake")
    assert delta_table(tmp_path / "lake").version() <= version + 1


def test_a_file_set_lands_in_a_delta_table(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    def drop(name: str, ids: range) -> None:
        with open(inbox / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "name", "price"])
            w.writerows([(i, f"item {i}", f"{i}.50") for i in ids])

    drop("a.csv", range(1, 4))
    job = write_job(tmp_path / "files.yaml", {
        "job": "delta_files", "source": {"url": "./inbox"}, "destination": {"url": "./lake", "format": "delta"},
        "copy": {"mode": "incremental", "update_method": "append"},
        "tables": [{"name": "sales", "pattern": "*.csv"}]})
    ok("run", job)
    drop("b.csv", range(4, 6))
    ok("run", job)
    ok("run", job)
    assert read_both(tmp_path / "lake", ["id", "name"], "sales") == [(i, f"item {i}") for i in range(1, 6)]


# ---------------------------------------------------------------- change capture


def changes(src: str) -> None:
    """Inserts, updates (one changes the key, one leaves a TOASTed value unchanged) and deletes."""
    execute(src, "ALTER TABLE orders ADD COLUMN big text",
            "UPDATE orders SET big = repeat('x', 20000) WHERE id = 3",
            "BEGIN", "INSERT INTO orders (id, status) SELECT g, 'txn' FROM generate_series(1001, 1100) g",
            "UPDATE orders SET status = 'paid', amount = amount + 1 WHERE id % 50 = 0",
            "DELETE FROM orders WHERE id BETWEEN 1010 AND 1019 OR id % 97 = 0", "COMMIT",
            "UPDATE orders SET id = id + 100000 WHERE id = 1001",
            "UPDATE orders SET note = 'later' WHERE id = 3")


@pytest.mark.usefixtures("slots")
def test_cdc_direct_applies_inserts_updates_deletes_and_a_key_change(tmp_path: Path, shop: str) -> None:
    job = job_file(tmp_path, shop, "cdc", "merge")
    ok("run", job)
    assert_equal(shop, tmp_path / "lake")
    changes(shop)
    ok("run", job)
    assert_equal(shop, tmp_path / "lake", [*COLUMNS, "big"])


@pytest.mark.usefixtures("slots")
def test_cdc_through_kafka(tmp_path: Path, shop: str, kafka_broker: KafkaBroker) -> None:
    n = next(_ids)
    job = job_file(tmp_path, shop, "cdc", "merge", transport="kafka",
                   kafka={"bootstrap_servers": kafka_broker.bootstrap, "topic_prefix": f"delta{os.getpid()}x{n}"})
    ok("run", job)
    assert_equal(shop, tmp_path / "lake")
    changes(shop)
    ok("run", job)
    assert_equal(shop, tmp_path / "lake", [*COLUMNS, "big"])
    # the apply side's markers (one per partition) ride in the table's commits: a run with nothing new finds
    # them and applies nothing again
    table = delta_table(tmp_path / "lake")
    names = {json.loads(h["copyjob.marker"])["table"] for h in table.history() if "copyjob.marker" in h}
    assert any(n.startswith("orders#") for n in names), names
    version = table.version()
    ok("run", job)
    assert delta_table(tmp_path / "lake").version() == version
    assert_equal(shop, tmp_path / "lake", [*COLUMNS, "big"])


@pytest.mark.usefixtures("slots")
@pytest.mark.parametrize("fault", ["destination-committed:1", "applied:1"])
def test_sigkill_after_the_table_commit_neither_doubles_nor_loses(tmp_path: Path, shop: str, fault: str) -> None:
    """Killed after data and marker landed in one Delta commit but before the state store (or the source) heard
    of it: the next run takes the position from the commit's marker."""
    mode = "incremental" if fault.startswith("destination") else "cdc"
    job = job_file(tmp_path, shop, mode, "append" if mode == "incremental" else "merge",
                   table={"name": "orders", "incremental_column": "id"} if mode == "incremental" else None)
    ok("run", job)
    execute(shop, "INSERT INTO orders (id, status) SELECT g, 'more' FROM generate_series(501, 900) g",
            "UPDATE orders SET status = 'paid' WHERE id <= 10")
    if mode == "incremental":
        execute(shop, "UPDATE orders SET status = 'new' WHERE id <= 10")  # not picked up by an append on id
    killed = copyjob("run", job, "--no-progress", env={"COPYJOB_FAULT": fault})
    assert killed.code == -signal.SIGKILL, killed.output
    ok("run", job)
    assert_equal(shop, tmp_path / "lake")
    ok("run", job)
    assert_equal(shop, tmp_path / "lake")


# ---------------------------------------------------------------- S3


def test_s3_lake_on_a_local_moto_server(tmp_path: Path, shop: str) -> None:
    import pyarrow.fs as pafs

    from tests.copyjob.test_file_copy import free_port

    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    port = free_port()
    # a process of its own: delta-rs holds the GIL while it waits for S3, so a server thread in this process
    # could not answer the test's own reads
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for_port(port)
        fs = pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http", access_key="k",
                               secret_key="s", region="us-east-1", allow_bucket_creation=True)
        fs.create_dir("lake")
        options = {"endpoint_url": endpoint, "access_key": "k", "secret_key": "s", "region": "us-east-1"}
        job = job_file(tmp_path, shop, "full", "merge", dst="s3://lake/tables", options=options)
        ok("run", job)
        execute(shop, "UPDATE orders SET status = 'paid' WHERE id % 3 = 0")
        ok("run", job)
        storage = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                   "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
        table = delta_table("s3://lake/tables", storage_options=storage)
        assert _normalise(pa.table(table.to_pyarrow_table()), COLUMNS) == source_rows(shop, COLUMNS)
        assert table.history(1)[0]["operation"] == "MERGE"
    finally:
        server.terminate()
        server.wait()


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# ---------------------------------------------------------------- layout and maintenance


def test_partition_by_creates_a_partitioned_table(tmp_path: Path, shop: str) -> None:
    job = job_file(tmp_path, shop, "full", "merge", table={"name": "orders", "partition_by": ["status"]})
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id % 2 = 0")
    ok("run", job)
    table = delta_table(tmp_path / "lake")
    assert table.metadata().partition_columns == ["status"]
    assert {Path(u).parent.name for u in table.file_uris()} == {"status=new", "status=paid"}
    assert_equal(shop, tmp_path / "lake")


def test_partition_by_is_refused_where_tables_have_no_partitions(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", {
        "job": "p", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "duckdb:///out.duckdb"},
        "tables": [{"name": "orders", "partition_by": ["day"]}]})
    out = copyjob("validate", job)
    assert out.code == 2
    assert "job.yaml:8: tables[0].partition_by: only for lakehouse destinations" in out.stderr, out.output


@pytest.mark.usefixtures("slots")
def test_maintain_compacts_many_small_cdc_merges_and_the_table_still_equals_the_source(
        tmp_path: Path, shop: str) -> None:
    job = job_file(tmp_path, shop, "cdc", "merge")
    ok("run", job)
    for i in range(6):  # six change runs, each a MERGE adding a small file
        execute(shop, f"INSERT INTO orders (id, status) SELECT g, 'pass {i}' FROM generate_series({1000 + 10 * i}, "
                f"{1009 + 10 * i}) g")
        ok("run", job)
    execute(shop, "UPDATE orders SET note = 'updated' WHERE id IN (7, 1025)", "DELETE FROM orders WHERE id = 1011")
    ok("run", job)
    files_before = len(delta_table(tmp_path / "lake").file_uris())
    assert files_before > 1
    dry = json.loads(ok("maintain", job, "--dry-run", "--json"))
    assert dry["tables"][0]["files_after"] == files_before
    out = ok("maintain", job)
    assert f"files {files_before} → 1" in out, out
    assert len(delta_table(tmp_path / "lake").file_uris()) == 1
    assert_equal(shop, tmp_path / "lake")
    refused = copyjob("maintain", job, "--retention", "1h")  # shorter than the table's 7 days
    assert refused.code == 2 and "deletedFileRetentionDuration" in refused.stderr, refused.output
    execute(shop, "UPDATE orders SET note = 'after maintain' WHERE id = 1", "DELETE FROM orders WHERE id = 2")
    ok("run", job)  # the marker survived the compaction commit: the stream carries on
    assert_equal(shop, tmp_path / "lake")


def test_maintain_refuses_a_destination_that_is_no_lakehouse(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", {
        "job": "m", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///out.db"},
        "tables": [{"name": "orders"}]})
    out = copyjob("maintain", job)
    assert out.code == 2
    assert out.stderr.strip().count("\n") == 0 and "only lakehouse destinations" in out.stderr, out.output
