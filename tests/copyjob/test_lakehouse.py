"""PostgreSQL → lakehouse tables (Delta Lake and Apache Iceberg) through the real CLI, each behaviour over both
formats: full (append, overwrite, merge), incremental, file sets, CDC (inserts, updates, deletes, a key change, an
unchanged TOAST value) direct and through Kafka, a SIGKILL between the table commit and the state save, S3 on a
local moto server, ``partition_by:`` and ``copyjob maintain``. After each run the table is read by two
independent readers (the format's own reader, and pyarrow.parquet over the data files of the current version)
and compared with the source row by row."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import copyjob, write_job
from tests.pg_cdc import drop_slots, execute, rows
from tests.services.kafka import KafkaBroker

_ids = itertools.count()
COLUMNS = ["id", "status", "amount", "note", "updated"]
FORMATS = [pytest.param("delta", id="delta"), pytest.param("iceberg", id="iceberg")]


# ---------------------------------------------------------------- independent readers, per format


def _normalise(table: pa.Table, columns: list[str]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r[c] for c in columns) for r in table.select(columns).to_pylist())


def delta_table(lake: Path | str, name: str = "orders", storage_options: dict[str, str] | None = None) -> Any:
    from deltalake import DeltaTable

    return DeltaTable(f"{lake}/{name}", storage_options=storage_options)


def iceberg_table(lake: Path, name: str = "orders", namespace: str = "copyjob") -> Any:
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("copyjob", uri=f"sqlite:///{lake / 'catalog.db'}", warehouse=lake.as_uri())
    return catalog.load_table((namespace, name))


def _read_delta(lake: Path, columns: list[str], name: str) -> list[tuple[Any, ...]]:
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


def _read_iceberg(lake: Path, columns: list[str], name: str) -> list[tuple[Any, ...]]:
    """The rows as pyiceberg scans them; asserts that pyarrow.parquet over the current data files agrees."""
    table = iceberg_table(lake, name)
    scanned = _normalise(table.scan().to_arrow(), columns)
    files = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
    parts = [pq.read_table(f, columns=columns) for f in files]
    direct = _normalise(pa.concat_tables(parts, promote_options="permissive"), columns) if parts else []
    assert direct == scanned
    return scanned


def read_both(fmt: str, lake: Path, columns: list[str], name: str = "orders") -> list[tuple[Any, ...]]:
    return (_read_delta if fmt == "delta" else _read_iceberg)(lake, columns, name)


def delta_version(lake: Path) -> int:
    """The Delta table's version: one more per commit. (An Iceberg commit may add several snapshots, a delete
    and an append, so there is no such count to compare for it.)"""
    return int(delta_table(lake).version())


def marker_names(fmt: str, lake: Path) -> set[str]:
    """The names of the copyjob markers the table's commits carry."""
    if fmt == "delta":
        return {json.loads(h["copyjob.marker"])["table"] for h in delta_table(lake).history()
                if "copyjob.marker" in h}
    from copyjob.connectors.iceberg.markers import MARKER_PREFIX

    found = set()
    for snapshot in iceberg_table(lake).snapshots():
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        found |= {json.loads(k.removeprefix(MARKER_PREFIX))[1] for k in props if k.startswith(MARKER_PREFIX)}
    return found


def source_rows(url: str, columns: list[str], table: str = "orders") -> list[tuple[Any, ...]]:
    return sorted(rows(url, f"SELECT {', '.join(columns)} FROM {table}"))


def assert_equal(fmt: str, src: str, lake: Path, columns: list[str] = COLUMNS) -> None:
    assert read_both(fmt, lake, columns) == source_rows(src, columns)


# ---------------------------------------------------------------- fixtures and job files


@pytest.fixture(params=FORMATS)
def fmt(request: pytest.FixtureRequest) -> str:
    pytest.importorskip("deltalake" if request.param == "delta" else "pyiceberg")
    return str(request.param)


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


def job_file(tmp_path: Path, fmt: str, src: str, mode: str, method: str, *, options: dict[str, str] | None = None,
             dst: str = "./lake", table: dict[str, Any] | None = None, **extra: Any) -> Path:
    n = next(_ids)
    job: dict[str, Any] = {
        "job": f"{fmt}{n}", "source": {"url": src},
        "destination": {"url": dst, "format": fmt, **({"options": options} if options else {})},
        "copy": {"mode": mode, "update_method": method}, "tables": [table or {"name": "orders"}], **extra}
    if mode == "cdc":
        job["cdc"] = {"max_batch_delay": "50ms"}
    return write_job(tmp_path / f"job{n}.yaml", job)


def ok(*args: str | Path, env: dict[str, str] | None = None) -> str:
    result = copyjob(*args, "--no-progress", env=env) if args[0] == "run" else copyjob(*args, env=env)
    assert result.code == 0, result.output
    return result.stdout


# ---------------------------------------------------------------- full and incremental


def assert_types(fmt: str, lake: Path) -> None:
    """numeric(10,2) stays a decimal and timestamptz a timestamp with a time zone."""
    if fmt == "delta":
        schema = pa.schema(delta_table(lake).schema().to_arrow())
        assert pa.types.is_decimal(schema.field("amount").type), schema
        assert (schema.field("amount").type.precision, schema.field("amount").type.scale) == (10, 2), schema
        assert schema.field("updated").type.tz is not None, schema
        first = sorted(pa.table(delta_table(lake).to_pyarrow_table()).to_pylist(), key=lambda r: r["id"])[0]
    else:
        table = iceberg_table(lake)
        assert str(table.schema().find_field("amount").field_type) == "decimal(10, 2)"
        assert str(table.schema().find_field("updated").field_type) == "timestamptz"
        first = sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["id"])[0]
    assert first["amount"] == Decimal("1.50") and first["updated"] == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("method", ["append", "overwrite", "merge"])
def test_full_copy_with_each_update_method(tmp_path: Path, fmt: str, shop: str, method: str) -> None:
    job = job_file(tmp_path, fmt, shop, "full", method)
    ok("run", job)
    assert_equal(fmt, shop, tmp_path / "lake")
    assert_types(fmt, tmp_path / "lake")
    if method == "append":  # a full append keeps every run's rows
        ok("run", job)
        assert read_both(fmt, tmp_path / "lake", ["id"]) == sorted([(i,) for i in range(1, 501)] * 2)
        return
    execute(shop, "UPDATE orders SET status = 'paid', note = 'n' WHERE id % 7 = 0",
            "DELETE FROM orders WHERE id % 11 = 0", "INSERT INTO orders (id, status) VALUES (1000, 'late')")
    ok("run", job)
    if method == "overwrite":
        assert_equal(fmt, shop, tmp_path / "lake")
    else:  # merge keeps the rows deleted at the source (a full merge upserts, it does not delete)
        gone = {(i,) for i in range(11, 501, 11)}
        assert set(read_both(fmt, tmp_path / "lake", ["id"])) - gone == set(source_rows(shop, ["id"]))
        assert set(read_both(fmt, tmp_path / "lake", COLUMNS)) >= set(source_rows(shop, COLUMNS))


def test_incremental_merge_picks_up_changed_rows(tmp_path: Path, fmt: str, shop: str) -> None:
    job = job_file(tmp_path, fmt, shop, "incremental", "merge",
                   table={"name": "orders", "incremental_column": "updated"})
    ok("run", job)
    assert_equal(fmt, shop, tmp_path / "lake")
    execute(shop, "UPDATE orders SET status = 'paid', updated = '2024-02-01 00:00:00+00' WHERE id <= 20",
            "INSERT INTO orders (id, status, updated) VALUES (501, 'new', '2024-02-02 00:00:00+00')")
    ok("run", job)
    assert_equal(fmt, shop, tmp_path / "lake")
    before = delta_version(tmp_path / "lake") if fmt == "delta" else 0
    ok("run", job)  # nothing new: the rows stay, at most one commit for the marker
    assert_equal(fmt, shop, tmp_path / "lake")
    if fmt == "delta":
        assert delta_version(tmp_path / "lake") <= before + 1


def test_a_file_set_lands_in_a_lakehouse_table(tmp_path: Path, fmt: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    def drop(name: str, ids: range) -> None:
        with open(inbox / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "name", "price"])
            w.writerows([(i, f"item {i}", f"{i}.50") for i in ids])

    drop("a.csv", range(1, 4))
    job = write_job(tmp_path / "files.yaml", {
        "job": f"{fmt}_files", "source": {"url": "./inbox"}, "destination": {"url": "./lake", "format": fmt},
        "copy": {"mode": "incremental", "update_method": "append"},
        "tables": [{"name": "sales", "pattern": "*.csv"}]})
    ok("run", job)
    drop("b.csv", range(4, 6))
    ok("run", job)
    ok("run", job)
    assert read_both(fmt, tmp_path / "lake", ["id", "name"], "sales") == [(i, f"item {i}") for i in range(1, 6)]


# ---------------------------------------------------------------- change capture


def changes(fmt: str, src: str) -> list[str]:
    """Inserts, updates (one changes the key, one leaves a TOASTed value unchanged) and deletes; for Delta also a
    column added at the source. Returns the columns to compare."""
    if fmt == "delta":
        toasted, columns = ["ALTER TABLE orders ADD COLUMN big text",
                            "UPDATE orders SET big = repeat('x', 20000) WHERE id = 3"], [*COLUMNS, "big"]
        untouched = "UPDATE orders SET note = 'later' WHERE id = 3"
    else:
        toasted, columns = ["UPDATE orders SET note = repeat('x', 20000) WHERE id = 3"], COLUMNS
        untouched = "UPDATE orders SET status = 'toast kept' WHERE id = 3"
    execute(src, *toasted,
            "BEGIN", "INSERT INTO orders (id, status) SELECT g, 'txn' FROM generate_series(1001, 1100) g",
            "UPDATE orders SET status = 'paid', amount = amount + 1 WHERE id % 50 = 0",
            "DELETE FROM orders WHERE id BETWEEN 1010 AND 1019 OR id % 97 = 0", "COMMIT",
            "UPDATE orders SET id = id + 100000 WHERE id = 1001", untouched)
    return columns


@pytest.mark.usefixtures("slots")
def test_cdc_direct_applies_inserts_updates_deletes_and_a_key_change(tmp_path: Path, fmt: str, shop: str) -> None:
    job = job_file(tmp_path, fmt, shop, "cdc", "merge")
    ok("run", job)
    assert_equal(fmt, shop, tmp_path / "lake")
    columns = changes(fmt, shop)
    ok("run", job)
    assert_equal(fmt, shop, tmp_path / "lake", columns)


@pytest.mark.usefixtures("slots")
def test_cdc_through_kafka(tmp_path: Path, fmt: str, shop: str, kafka_broker: KafkaBroker) -> None:
    n = next(_ids)
    job = job_file(tmp_path, fmt, shop, "cdc", "merge", transport="kafka",
                   kafka={"bootstrap_servers": kafka_broker.bootstrap, "topic_prefix": f"{fmt}{os.getpid()}x{n}"})
    ok("run", job)
    assert_equal(fmt, shop, tmp_path / "lake")
    columns = changes(fmt, shop)
    ok("run", job)
    assert_equal(fmt, shop, tmp_path / "lake", columns)
    # the apply side's markers (one per partition) ride in the table's commits: a run with nothing new finds
    # them and applies nothing again
    names = marker_names(fmt, tmp_path / "lake")
    assert any(n.startswith("orders#") for n in names), names
    before = delta_version(tmp_path / "lake") if fmt == "delta" else 0
    ok("run", job)
    if fmt == "delta":
        assert delta_version(tmp_path / "lake") == before
    assert_equal(fmt, shop, tmp_path / "lake", columns)


@pytest.mark.usefixtures("slots")
@pytest.mark.parametrize("fault", ["destination-committed:1", "applied:1"])
def test_sigkill_after_the_table_commit_neither_doubles_nor_loses(tmp_path: Path, fmt: str, shop: str,
                                                                  fault: str) -> None:
    """Killed after data and marker landed in one table commit but before the state store (or the source) heard
    of it: the next run takes the position from the commit's marker."""
    mode = "incremental" if fault.startswith("destination") else "cdc"
    job = job_file(tmp_path, fmt, shop, mode, "append" if mode == "incremental" else "merge",
                   table={"name": "orders", "incremental_column": "id"} if mode == "incremental" else None)
    ok("run", job)
    execute(shop, "INSERT INTO orders (id, status) SELECT g, 'more' FROM generate_series(501, 900) g",
            "UPDATE orders SET status = 'paid' WHERE id <= 10")
    if mode == "incremental":
        execute(shop, "UPDATE orders SET status = 'new' WHERE id <= 10")  # not picked up by an append on id
    killed = copyjob("run", job, "--no-progress", env={"COPYJOB_FAULT": fault})
    assert killed.code == -signal.SIGKILL, killed.output
    ok("run", job)
    assert_equal(fmt, shop, tmp_path / "lake")
    ok("run", job)
    assert_equal(fmt, shop, tmp_path / "lake")


# ---------------------------------------------------------------- S3


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


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """One local moto S3 server for the module, in a process of its own: delta-rs holds the GIL while it waits
    for S3, so a server thread in this process could not answer the test's own reads."""
    from tests.copyjob.test_file_copy import free_port

    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def test_s3_lake_on_a_local_moto_server(tmp_path: Path, fmt: str, shop: str, s3_endpoint: str) -> None:
    import pyarrow.fs as pafs

    bucket = f"lake-{fmt}"
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http", access_key="k",
                           secret_key="s", region="us-east-1", allow_bucket_creation=True)
    fs.create_dir(bucket)
    options = {"endpoint_url": s3_endpoint, "access_key": "k", "secret_key": "s", "region": "us-east-1"}
    if fmt == "iceberg":
        options["catalog_uri"] = f"sqlite:///{tmp_path / 'catalog.db'}"
    job = job_file(tmp_path, fmt, shop, "full", "merge", dst=f"s3://{bucket}/tables", options=options)
    ok("run", job)
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id % 3 = 0")
    ok("run", job)
    if fmt == "delta":
        storage = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                   "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
        table = delta_table(f"s3://{bucket}/tables", storage_options=storage)
        assert _normalise(pa.table(table.to_pyarrow_table()), COLUMNS) == source_rows(shop, COLUMNS)
        assert table.history(1)[0]["operation"] == "MERGE"
    else:
        from pyiceberg.catalog.sql import SqlCatalog

        catalog = SqlCatalog("copyjob", uri=options["catalog_uri"], warehouse=f"s3://{bucket}/tables",
                             **{"s3.endpoint": s3_endpoint, "s3.access-key-id": "k", "s3.secret-access-key": "s",
                                "s3.region": "us-east-1"})
        table = catalog.load_table(("copyjob", "orders"))
        assert table.location().startswith(f"s3://{bucket}/tables/")
        assert _normalise(table.scan().to_arrow(), COLUMNS) == source_rows(shop, COLUMNS)
    assert fs.get_file_info(pafs.FileSelector(f"{bucket}/tables", recursive=True))


# ---------------------------------------------------------------- layout and maintenance


def test_partition_by_creates_a_partitioned_table(tmp_path: Path, fmt: str, shop: str) -> None:
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id % 2 = 0")
    ok("run", job_file(tmp_path, fmt, shop, "full", "merge", table={"name": "orders", "partition_by": ["status"]}))
    if fmt == "delta":
        table = delta_table(tmp_path / "lake")
        assert table.metadata().partition_columns == ["status"]
        assert {Path(u).parent.name for u in table.file_uris()} == {"status=new", "status=paid"}
    else:
        table = iceberg_table(tmp_path / "lake")
        assert [f.name for f in table.spec().fields] == ["status"]
        assert sorted({t.file.partition[0] for t in table.scan().plan_files()}) == ["new", "paid"]
    assert_equal(fmt, shop, tmp_path / "lake")


def test_partition_by_is_refused_where_tables_have_no_partitions(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", {
        "job": "p", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "duckdb:///out.duckdb"},
        "tables": [{"name": "orders", "partition_by": ["day"]}]})
    out = copyjob("validate", job)
    assert out.code == 2
    assert "job.yaml:8: tables[0].partition_by: only for lakehouse destinations" in out.stderr, out.output


@pytest.mark.usefixtures("slots")
def test_maintain_compacts_many_small_cdc_merges_of_a_delta_table(tmp_path: Path, shop: str) -> None:
    pytest.importorskip("deltalake")
    job = job_file(tmp_path, "delta", shop, "cdc", "merge")
    ok("run", job)
    for i in range(3):  # three change runs, each a MERGE adding a small file
        execute(shop, f"INSERT INTO orders (id, status) SELECT g, 'pass {i}' FROM generate_series({1000 + 10 * i}, "
                f"{1009 + 10 * i}) g")
        ok("run", job)
    execute(shop, "UPDATE orders SET note = 'updated' WHERE id IN (7, 1015)", "DELETE FROM orders WHERE id = 1011")
    ok("run", job)
    files_before = len(delta_table(tmp_path / "lake").file_uris())
    assert files_before > 1
    dry = json.loads(ok("maintain", job, "--dry-run", "--json"))
    assert dry["tables"][0]["files_after"] == files_before
    out = ok("maintain", job)
    assert f"files {files_before} → 1" in out, out
    assert len(delta_table(tmp_path / "lake").file_uris()) == 1
    assert_equal("delta", shop, tmp_path / "lake")
    refused = copyjob("maintain", job, "--retention", "1h")  # shorter than the table's 7 days
    assert refused.code == 2 and "deletedFileRetentionDuration" in refused.stderr, refused.output
    execute(shop, "UPDATE orders SET note = 'after maintain' WHERE id = 1", "DELETE FROM orders WHERE id = 2")
    ok("run", job)  # the marker survived the compaction commit: the stream carries on
    assert_equal("delta", shop, tmp_path / "lake")


def test_maintain_compacts_and_expires_an_iceberg_table(tmp_path: Path, shop: str) -> None:
    pytest.importorskip("pyiceberg")
    job = job_file(tmp_path, "iceberg", shop, "incremental", "merge",
                   table={"name": "orders", "incremental_column": "updated"})
    ok("run", job)
    for i in range(3):  # three more commits, each merging a few rows: small files
        execute(shop, f"UPDATE orders SET note = 'pass {i}', updated = '2024-02-0{i + 1} 00:00:00+00' WHERE id = {i}",
                f"INSERT INTO orders (id, status, updated) VALUES ({600 + i}, 'new', '2024-02-0{i + 1} 00:00:00+00')")
        ok("run", job)
    before = iceberg_table(tmp_path / "lake")
    files_before = len(list(before.scan().plan_files()))
    snapshots_before = len(before.snapshots())
    assert files_before > 1
    out = ok("maintain", job, "--retention", "0s")
    after = iceberg_table(tmp_path / "lake")
    assert len(list(after.scan().plan_files())) == 1, out
    assert len(after.snapshots()) < snapshots_before, out
    assert_equal("iceberg", shop, tmp_path / "lake")
    execute(shop, "UPDATE orders SET note = 'after maintain', updated = '2024-03-01 00:00:00+00' WHERE id = 1")
    ok("run", job)  # the marker survived: the next run carries on
    assert_equal("iceberg", shop, tmp_path / "lake")


def test_maintain_refuses_a_destination_that_is_no_lakehouse(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", {
        "job": "m", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///out.db"},
        "tables": [{"name": "orders"}]})
    out = copyjob("maintain", job)
    assert out.code == 2
    assert out.stderr.strip().count("\n") == 0 and "only lakehouse destinations" in out.stderr, out.output
