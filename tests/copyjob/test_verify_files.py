"""copyjob verify through the real CLI where a side is files: a CSV folder into SQLite and PostgreSQL (changed,
deleted and added rows found with their keys and columns, then repaired; the last row of a key under merge; files
not copied yet left out), a database into folders of Parquet, CSV and JSON lines files (equal after the
documented conversions; a changed output file found, reported as not repairable) and CSV files on S3 into JSON
lines on S3 (the source files behind the differing outputs copied again)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import copyjob, write_job
from tests.pg_cdc import execute, rows

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01 00:00:00 UTC


def put(folder: Path, name: str, text: str, mtime_ns: int) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def csv_rows(ids: range, suffix: str = "") -> str:
    return "id,name,amount,day\n" + "".join(f"{i},name {i}{suffix},{i}.25,2026-01-{1 + i % 28:02d}\n" for i in ids)


def job_file(tmp_path: Path, source: str, destination: str, table: dict[str, Any], **copy: Any) -> Path:
    return write_job(tmp_path / "job.yaml", {
        "job": "verify_files", "source": {"url": source}, "destination": {"url": destination},
        "copy": {"mode": "incremental", **copy}, "tables": [table]})


def run_ok(job: Path) -> None:
    result = copyjob("run", job, "--no-progress")
    assert result.code == 0, result.output


def verify(job: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = copyjob("verify", job, "--json", *extra)
    assert result.code in (0, 1) and result.stdout.startswith("{"), result.output
    report: dict[str, Any] = json.loads(result.stdout)["tables"][0]
    return result.code, report


# ---------------------------------------------------------------- a file set into a database


class Db:
    """The destination database of the file-set test, SQLite or PostgreSQL."""

    def __init__(self, url: str, path: Path | None) -> None:
        self.url, self.path = url, path

    def exec(self, *statements: str) -> None:
        if self.path is None:
            execute(self.url, *statements)
            return
        con = sqlite3.connect(self.path)
        for s in statements:
            con.execute(s)
        con.commit()
        con.close()

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.path is None:
            return rows(self.url, sql)
        con = sqlite3.connect(self.path)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        return Db(f"sqlite:///{tmp_path / 'dst.db'}", tmp_path / "dst.db")
    return Db(request.getfixturevalue("pg_url"), None)


def test_a_csv_folder_into_a_database_is_verified_and_repaired(tmp_path: Path, db: Db) -> None:
    src = tmp_path / "in"
    put(src, "a.csv", csv_rows(range(1, 2001)), T0)
    put(src, "sub/b.csv", csv_rows(range(2001, 4001)), T0 + S)
    put(src, "c.csv", csv_rows(range(10, 12), suffix=" again"), T0 + 2 * S)  # keys 10, 11 again: the last wins
    job = job_file(tmp_path, "./in", db.url, {"name": "sales", "pattern": "**/*.csv", "format": "csv",
                                              "key": ["id"], "columns": {"name": "label"},
                                              "source_file_column": True}, update_method="merge")
    run_ok(job)
    code, report = verify(job)
    assert code == 0, report
    assert report["rows_source"] == report["rows_destination"] == 4000
    assert any("3 source file(s) read" in n and "the last of each key" in n for n in report["notes"]), report

    put(src, "d.csv", csv_rows(range(5000, 5010)), T0 + 3 * S)  # not copied yet: left out
    db.exec("UPDATE sales SET label = 'edited' WHERE id = 17", "UPDATE sales SET amount = 0 WHERE id = 10",
            "DELETE FROM sales WHERE id IN (2, 3999)",
            "INSERT INTO sales (id, label, amount, day, _source_file) VALUES (9000, 'behind our back', 1, "
            "'2026-01-01', 'x.csv')")
    code, report = verify(job)
    assert code == 1
    assert report["missing"] == [{"id": 2}, {"id": 3999}]
    assert report["extra"] == [{"id": 9000}]
    assert report["different"] == [{"key": {"id": 10}, "columns": ["amount"]},
                                   {"key": {"id": 17}, "columns": ["label"]}]
    assert any("1 file(s) newer than the last committed copy" in n for n in report["notes"]), report

    code, report = verify(job, "--repair")
    assert code == 0 and report["result"] == "repaired" and report["repaired"] == 5, report
    assert verify(job)[0] == 0
    assert db.rows("SELECT label, _source_file FROM sales WHERE id IN (2, 10) ORDER BY id") == [
        ("name 2", "a.csv"), ("name 10 again", "c.csv")]
    assert db.rows("SELECT count(*) FROM sales WHERE id = 9000") == [(0,)]
    run_ok(job)  # d.csv copied: compared from now on
    code, report = verify(job)
    assert code == 0 and report["rows_source"] == 4010, report


def test_a_csv_folder_appended_without_a_key_is_compared_by_counts_and_one_hash(tmp_path: Path) -> None:
    src = tmp_path / "in"
    put(src, "a.csv", csv_rows(range(1, 301)), T0)
    put(src, "b.csv", csv_rows(range(1, 301)), T0 + S)  # the same rows twice: append keeps both
    db = tmp_path / "dst.db"
    job = job_file(tmp_path, "./in", f"sqlite:///{db}", {"name": "events", "pattern": "*.csv", "format": "csv"},
                   update_method="append")
    run_ok(job)
    code, report = verify(job)
    assert code == 0 and report["rows_source"] == 600, report
    con = sqlite3.connect(db)
    con.execute("UPDATE events SET name = 'x' WHERE rowid = 5")
    con.commit()
    con.close()
    code, report = verify(job)
    assert code == 1 and report["result"] != "equal" and any("no key" in n for n in report["notes"]), report


# ---------------------------------------------------------------- a database into a folder of files


def _readings(url: str) -> None:
    execute(url, "CREATE TABLE readings (id bigint PRIMARY KEY, at timestamptz, local timestamp, v numeric(9,3), "
                 "ok boolean, ratio double precision, note text, day date)",
            "INSERT INTO readings SELECT g, timestamptz '2024-01-01 00:00:00.5+00' + g * interval '1 second', "
            "timestamp '2024-03-01 12:00:00' + g * interval '1 minute', g / 3.0, g % 2 = 0, g / 7.0, "
            "CASE WHEN g % 5 = 0 THEN NULL ELSE 'note, \"' || g || '\"' END, date '2024-01-01' + g "
            "FROM generate_series(1, 3000) g")


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_folder_of_files_is_compared_and_a_changed_file_found(tmp_path: Path, pg_url: str, fmt: str) -> None:
    _readings(pg_url)
    out = tmp_path / "out"
    job = job_file(tmp_path, pg_url, f"file:///{out}?format={fmt}", {"name": "readings"}, mode="full",
                   update_method="overwrite")
    run_ok(job)
    code, report = verify(job)
    assert code == 0, report  # equal after the documented conversions of each format
    assert report["rows_destination"] == 3000
    assert any("1 output file(s) read" in n for n in report["notes"]), report

    (output,) = list((out / "readings").glob(f"*.{fmt}"))
    _edit_output(output, fmt)
    code, report = verify(job)
    assert code == 1
    assert report["different"] == [{"key": {"id": 1234}, "columns": ["v"]}]
    assert report["missing"] == [{"id": 77}] and report["extra"] == []
    code, report = verify(job, "--repair")
    assert code == 1 and any("not repaired: the outputs of a file destination fed by a database" in n
                             for n in report["notes"]), report


def _edit_output(path: Path, fmt: str) -> None:
    """Row 1234's v changed and row 77 dropped, behind copyjob's back."""
    if fmt == "jsonl":
        kept = []
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["id"] == 1234:
                row["v"] = "1.000"
            if row["id"] != 77:
                kept.append(json.dumps(row))
        path.write_text("\n".join(kept) + "\n")
        return
    if fmt == "csv":  # id,at,local,v,…: no commas before v
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            parts = line.split(",", 4)
            if parts[0] == "1234":
                lines[i] = ",".join([*parts[:3], "1.000", parts[4]])
        path.write_text("\n".join(line for line in lines if not line.startswith("77,")) + "\n")
        return
    table = pq.read_table(path)
    ids = table.column("id").to_pylist()
    v = [str(x) if x is not None else None for x in table.column("v").to_pylist()]
    v[ids.index(1234)] = "1.000"
    table = table.set_column(table.schema.get_field_index("v"), "v", pa.array(v).cast(table.schema.field("v").type))
    table = table.filter(pa.array([i != 77 for i in ids]))
    pq.write_table(table, path)


def test_an_overwritten_folder_equal_to_its_source(tmp_path: Path, pg_url: str) -> None:
    """psycopg round trip: the folder's rows read back equal the source's after a second full run."""
    _readings(pg_url)
    out = tmp_path / "out"
    job = job_file(tmp_path, pg_url, f"file:///{out}", {"name": "readings"}, mode="full", update_method="overwrite")
    run_ok(job)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE readings SET note = 'changed at the source' WHERE id = 5")
    code, report = verify(job)
    assert code == 1 and report["different"] == [{"key": {"id": 5}, "columns": ["note"]}]
    run_ok(job)
    assert verify(job)[0] == 0


# ---------------------------------------------------------------- S3 on both sides


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_csv_files_on_s3_into_json_lines_on_s3(tmp_path: Path, s3_endpoint: str) -> None:
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http", access_key="k",
                           secret_key="s", region="us-east-1", allow_bucket_creation=True)
    bucket = f"verify-{uuid.uuid4().hex[:12]}"  # moto's state is shared by every server in this process
    fs.create_dir(bucket)
    for name, ids in (("in/2026/a.csv", range(1, 400)), ("in/2026/b.csv", range(400, 700))):
        with fs.open_output_stream(f"{bucket}/{name}") as f:
            f.write(csv_rows(ids).encode())
    options = {"endpoint_url": s3_endpoint, "access_key": "k", "secret_key": "s", "region": "us-east-1"}
    job = write_job(tmp_path / "job.yaml", {
        "job": "s3", "source": {"url": f"s3://{bucket}/in", "options": options},
        "destination": {"url": f"s3://{bucket}/out?format=jsonl", "options": options}, "copy": {"mode": "incremental"},
        "tables": [{"name": "sales", "pattern": "**/*.csv", "key": ["id"]}]})
    run_ok(job)
    code, report = verify(job)
    assert code == 0 and report["rows_source"] == 699, report
    with fs.open_input_file(f"{bucket}/out/sales/2026/b.jsonl") as f:
        lines = f.read().decode().splitlines()
    edited = json.loads(lines[5])
    edited["name"] = "edited"
    lines[5] = json.dumps(edited)
    with fs.open_output_stream(f"{bucket}/out/sales/2026/b.jsonl") as f:
        f.write(("\n".join(lines) + "\n").encode())
    with fs.open_output_stream(f"{bucket}/out/sales/2026/a.jsonl") as f:  # every row of a.csv lost but one
        f.write((json.dumps({"id": 1, "name": "name 1", "amount": 1.25, "day": "2026-01-02"}) + "\n").encode())
    code, report = verify(job)
    assert code == 1 and report["different"] == [{"key": {"id": edited["id"]}, "columns": ["name"]}], report
    assert report["missing_count"] == 398 and report["extra"] == [], report

    # each output is named after its source file: exactly those two files are copied again
    code, report = verify(job, "--repair")
    assert code == 0 and report["result"] == "repaired", report
    assert any("re-copied 2 source file(s) over their outputs: 2026/a.csv, 2026/b.csv" in n
               for n in report["notes"]), report
    assert verify(job)[0] == 0


def test_rows_read_for_verify_are_held_on_disk_not_in_memory() -> None:
    """Rows verify reads from files or a lakehouse snapshot go into a DuckDB database file in a temporary folder
    (read back through its buffer pool, which the memory limit bounds), not an in-memory database that keeps
    every loaded row in memory; the folder goes when verify is done."""
    from copyjob.connectors._digest_arrow import ArrowDigests

    from copyjob.core.schema import Column, LogicalType, TableName, TableSchema

    schema = TableSchema(TableName("t"), (Column("id", LogicalType("int64")), Column("s", LogicalType("string"))),
                         ("id",))
    batch = pa.record_batch([pa.array(range(1000), pa.int64()), pa.array([f"row {i}" for i in range(1000)])],
                            schema=schema.arrow_schema())
    loaded = ArrowDigests()
    try:
        assert loaded.load(TableName("t"), schema, [("f.parquet", batch)]) == 1000
        ((path,),) = loaded._con.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
        assert path is not None and Path(path).is_file()
        assert Path(path).parent == Path(loaded._spill)
    finally:
        loaded.close()
    assert not Path(path).parent.exists()
