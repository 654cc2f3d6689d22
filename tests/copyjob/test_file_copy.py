"""Files end to end through the real CLI: CSV, JSON lines and Parquet into SQLite, PostgreSQL, DuckDB and file
folders; incremental by modification time; bad files quarantined; crashes; S3 through a local moto server."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from copyjob.ingest.files import FileMark
from copyjob.offsets import default_state_url, open_state_store

from copyjob.core.contracts import TableRunRecord
from copyjob.core.errors import JobFileError
from copyjob.loader import load_job
from copyjob.runner import JobRun
from tests.helpers import ROOT, copyjob, duckdb_rows, sqlite_rows, write_job

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01 00:00:00 UTC


def put(folder: Path, name: str, text: str | bytes, mtime_ns: int | None = None) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def csv_rows(ids: range, header: str = "id,name,amount") -> str:
    return header + "\n" + "".join(f"{i},name {i},{i}.25\n" for i in ids)


def jsonl_rows(ids: range) -> str:
    return "".join(json.dumps({"id": i, "name": f"name {i}", "tags": [i]}) + "\n" for i in ids)


def parquet_file(folder: Path, name: str, ids: range, mtime_ns: int | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": list(ids), "name": [f"name {i}" for i in ids]}), folder / name)
    if mtime_ns is not None:
        os.utime(folder / name, ns=(mtime_ns, mtime_ns))


def job(tmp_path: Path, destination: str | dict[str, Any], tables: list[dict[str, Any]], source: str = "./in",
        **copy: Any) -> Path:
    dest = destination if isinstance(destination, dict) else {"url": destination}
    return write_job(tmp_path / "job.yaml", {"job": "files", "source": {"url": source}, "destination": dest,
                                             "copy": copy, "tables": tables})


def run_ok(job_file: Path) -> dict[str, TableRunRecord]:
    """One run in this process (the CLI costs a second of imports per call: tests that check what a person
    sees use it)."""
    loaded = load_job(job_file)
    url = default_state_url(loaded.path)
    job_run = JobRun(loaded, lambda: open_state_store(url))
    try:
        record = job_run.run()
    finally:
        job_run.close()
    assert record.status == "ok", [t.error for t in record.tables]
    return {t.table: t for t in record.tables}


# ---------------------------------------------------------------- into databases


def test_csv_jsonl_and_parquet_into_sqlite_with_source_file_column(tmp_path: Path) -> None:
    src = tmp_path / "in"
    put(src, "sales/2026-01.csv", csv_rows(range(1, 4)), T0)
    put(src, "sales/2026-02.csv.gz", __import__("gzip").compress(csv_rows(range(4, 6)).encode()), T0 + S)
    put(src, "events/a.jsonl", jsonl_rows(range(1, 3)), T0)
    parquet_file(src / "items", "a.parquet", range(1, 11), T0)
    j = job(tmp_path, "sqlite:///out.db", [
        {"name": "sales", "pattern": "sales/*", "format": "csv", "source_file_column": True},
        {"name": "events", "pattern": "events/*.jsonl"},
        {"name": "items", "pattern": "items/*.parquet", "target": "stock"},
    ], mode="incremental", update_method="append")
    run_ok(j)
    db = tmp_path / "out.db"
    assert sqlite_rows(db, "SELECT id, name, amount, _source_file FROM sales ORDER BY id")[3:] == [
        (4, "name 4", 4.25, "sales/2026-02.csv.gz"), (5, "name 5", 5.25, "sales/2026-02.csv.gz")]
    assert sqlite_rows(db, "SELECT id, name, tags FROM events ORDER BY id") == [(1, "name 1", "[1]"),
                                                                                 (2, "name 2", "[2]")]
    assert sqlite_rows(db, "SELECT count(*), sum(id) FROM stock") == [(10, 55)]
    put(src, "events/b.jsonl", jsonl_rows(range(3, 5)), T0 + 5 * S)
    runs = run_ok(j)
    assert runs["sales"].rows_read == 0 and runs["events"].rows_read == 2
    assert runs["events"].mode == "incremental"
    assert sqlite_rows(db, "SELECT count(*), count(DISTINCT id) FROM events") == [(4, 4)]
    assert sqlite_rows(db, "SELECT count(*) FROM sales") == [(5,)]


def test_postgres_merge_with_new_rewritten_and_same_timestamp_files(tmp_path: Path, pg_url: str) -> None:
    src = tmp_path / "in"
    put(src, "a.csv", csv_rows(range(1, 101)), T0)
    put(src, "b.csv", csv_rows(range(101, 201)), T0 + S)
    put(src, "e.jsonl", jsonl_rows(range(1, 4)), T0)
    parquet_file(src, "p.parquet", range(1, 6), T0)
    j = job(tmp_path, pg_url, [{"name": "sales", "pattern": "*.csv", "key": ["id"], "target": "shop.sales"},
                               {"name": "events", "pattern": "*.jsonl", "key": ["id"], "source_file_column": True},
                               {"name": "items", "pattern": "*.parquet", "key": ["id"]}],
            mode="incremental", update_method="merge")
    run_ok(j)
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT id, tags::text, _source_file FROM events ORDER BY id").fetchall()[0] == (
            1, "[1]", "e.jsonl")
        assert con.execute("SELECT count(*) FROM items").fetchone() == (5,)
    put(src, "a.csv", csv_rows(range(1, 101)).replace("name 7,", "renamed,"), T0 + 2 * S)  # rewritten in place
    put(src, "c.csv", csv_rows(range(201, 211)), T0 + 2 * S)  # same time as the rewrite
    assert run_ok(j)["shop.sales"].rows_read == 110
    put(src, "d.csv", csv_rows(range(211, 216)), T0 + 2 * S)  # arrives later with the mark's timestamp
    assert run_ok(j)["shop.sales"].rows_read == 5
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id), sum(amount) FROM shop.sales").fetchone() == (
            215, 215, sum(i + 0.25 for i in range(1, 216)))
        assert con.execute("SELECT name FROM shop.sales WHERE id = 7").fetchone() == ("renamed",)
        key = con.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                          "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'shop.sales'::regclass "
                          "AND i.indisprimary").fetchall()
        assert key == [("id",)]


def test_duckdb_append_incremental_never_doubles(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i in range(5):
        parquet_file(src, f"p{i}.parquet", range(i * 10, i * 10 + 10), T0 + i * S)
    j = job(tmp_path, "duckdb:///wh.duckdb", [{"name": "items", "pattern": "*.parquet"}], mode="incremental")
    run_ok(j)
    run_ok(j)
    parquet_file(src, "p5.parquet", range(50, 60), T0 + 9 * S)
    run_ok(j)
    assert duckdb_rows(tmp_path / "wh.duckdb", "SELECT count(*), count(DISTINCT id) FROM items") == [(60, 60)]


def test_a_column_that_appears_in_a_later_file_is_added(tmp_path: Path) -> None:
    src = tmp_path / "in"
    put(src, "a.csv", "id,name\n1,a\n", T0)
    put(src, "b.csv", "id,name,city\n2,b,Oslo\n", T0 + S)
    j = job(tmp_path, "sqlite:///out.db", [{"name": "people", "pattern": "*.csv"}])
    run_ok(j)
    assert sqlite_rows(tmp_path / "out.db", "SELECT id, name, city FROM people ORDER BY id") == [
        (1, "a", None), (2, "b", "Oslo")]


@pytest.mark.parametrize("dest", ["sqlite:///out.db", "file:out"])
def test_full_overwrite_empties_the_table_in_the_first_commit_only(tmp_path: Path, dest: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import copyjob.file_copy

    monkeypatch.setattr(copyjob.file_copy, "GROUP_FILES", 2)  # five files: three commits
    src = tmp_path / "in"
    for i in range(5):
        put(src, f"f{i}.csv", csv_rows(range(i * 10, i * 10 + 10)), T0 + i * S)
    j = job(tmp_path, dest, [{"name": "sales", "pattern": "*.csv"}], update_method="overwrite")

    def ids() -> list[int]:
        if dest.startswith("sqlite"):
            return [r[0] for r in sqlite_rows(tmp_path / "out.db", "SELECT id FROM sales ORDER BY id")]
        return sorted(ds.dataset(tmp_path / "out" / "sales", format="parquet").to_table().column("id").to_pylist())

    run_ok(j)
    run_ok(j)
    assert ids() == list(range(50))
    (src / "f0.csv").unlink()
    run_ok(j)
    assert ids() == list(range(10, 50))


# ---------------------------------------------------------------- into file folders


def test_csv_into_a_parquet_folder_replaces_the_output_of_a_rewritten_file(tmp_path: Path) -> None:
    src = tmp_path / "in"
    put(src, "2026/a.csv", csv_rows(range(1, 4)), T0)
    put(src, "2026/b.csv", csv_rows(range(4, 6)), T0 + S)
    j = job(tmp_path, "file:out", [{"name": "sales", "pattern": "**/*.csv"}], mode="incremental")
    run_ok(j)
    put(src, "2026/a.csv", csv_rows(range(1, 3)), T0 + 5 * S)
    run_ok(j)
    folder = tmp_path / "out" / "sales"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "2026/a.parquet", "2026/b.parquet", "_schema.json"]
    ids = ds.dataset(folder, format="parquet").to_table().column("id").to_pylist()
    assert sorted(ids) == [1, 2, 4, 5]
    assert json.loads((tmp_path / "out" / "_copyjob_state" / "files" / "sales.json").read_text())["state"]


def test_jsonl_into_a_csv_folder(tmp_path: Path) -> None:
    put(tmp_path / "in", "e.jsonl", jsonl_rows(range(1, 4)), T0)
    j = job(tmp_path, {"url": "file:out", "format": "csv"}, [{"name": "events", "pattern": "*.jsonl"}])
    run_ok(j)
    table = pcsv.read_csv(tmp_path / "out" / "events" / "e.csv")
    assert table.column("id").to_pylist() == [1, 2, 3] and table.column("tags").to_pylist()[0] == "[1]"


# ---------------------------------------------------------------- bad files


def test_bad_files_are_quarantined_named_and_retried_once_fixed(tmp_path: Path) -> None:
    src = tmp_path / "in"
    put(src, "a.csv", csv_rows(range(1, 4)), T0)
    put(src, "b.csv", csv_rows(range(4, 7)) + "7,name 7,7.25,surplus\n", T0 + S)
    put(src, "c.csv", csv_rows(range(8, 9)), T0 + 2 * S)
    put(src, "d.csv", b"id,name,amount\n9,caf\xe9,1\n", T0 + 3 * S)
    put(src, "p/x.parquet", b"PAR1 broken", T0)
    parquet_file(src / "p", "y.parquet", range(1, 3), T0 + S)
    j = job(tmp_path, "sqlite:///out.db", [{"name": "sales", "pattern": "*.csv"},
                                           {"name": "items", "pattern": "p/*.parquet"}], mode="incremental")
    first = copyjob("run", j)
    assert first.code == 1, first.output
    assert f"{src}/b.csv:5: expected 3 fields, got 4" in first.output
    assert f"{src}/d.csv:2: cannot be decoded as utf-8" in first.output
    assert f"{src}/p/x.parquet: not a readable Parquet file" in first.output
    db = tmp_path / "out.db"
    assert sqlite_rows(db, "SELECT id FROM sales ORDER BY id") == [(1,), (2,), (3,), (8,)]
    assert sqlite_rows(db, "SELECT count(*) FROM items") == [(2,)]
    status = json.loads(copyjob("status", j, "--json").stdout)["tables"]
    assert {t["table"]: t["last_outcome"] for t in status} == {"sales": "failed", "items": "failed"}
    again = copyjob("run", j)  # unchanged: not read again, but said
    assert again.code == 0, again.output
    assert "stay quarantined" in again.output and "0 rows written" in again.output
    put(src, "b.csv", csv_rows(range(4, 8)), T0 + S)  # fixed, even with its old time and a new size
    put(src, "d.csv", b"id,name,amount\n9,cafe,1\n", T0 + 9 * S)
    parquet_file(src / "p", "x.parquet", range(3, 4), T0 + 9 * S)
    run_ok(j)
    assert sqlite_rows(db, "SELECT count(*), count(DISTINCT id) FROM sales") == [(9, 9)]
    assert sqlite_rows(db, "SELECT count(*) FROM items") == [(3,)]
    store = open_state_store(default_state_url(j))
    assert FileMark.from_json(store.load(load_job(j).scope, "sales").extra["files"]).quarantined == {}
    store.close()


# ---------------------------------------------------------------- crashes and streaming


def many_files(src: Path, count: int, rows: int) -> None:
    for i in range(count):
        put(src, f"part-{i:04d}.csv", csv_rows(range(i * rows, (i + 1) * rows)), T0 + i * S // 1000)


def committed_rows(db: Path) -> int:
    try:
        return int(sqlite_rows(db, "SELECT count(*) FROM sales")[0][0])
    except sqlite3.OperationalError:  # not created yet, or locked by a commit
        return 0


@pytest.mark.parametrize(("mode", "kill_after_rows"), [("incremental", 1), ("full", 300_000)])
def test_sigkill_mid_way_through_many_files_then_rerun_equals_the_source(tmp_path: Path, mode: str,
                                                                          kill_after_rows: int) -> None:
    many_files(tmp_path / "in", 300, 2000)
    j = job(tmp_path, "sqlite:///out.db", [{"name": "sales", "pattern": "*.csv"}], mode=mode,
            update_method="append")
    proc = subprocess.Popen([sys.executable, "-m", "copyjob", "run", str(j)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while committed_rows(tmp_path / "out.db") < kill_after_rows and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert 0 < committed_rows(tmp_path / "out.db") < 600_000  # killed mid-way: some groups are in
    run_ok(j)
    assert sqlite_rows(tmp_path / "out.db", "SELECT count(*), count(DISTINCT id) FROM sales") == [
        (600_000, 600_000)]


class DiesOnSave:
    """A state store whose process 'dies' right after the destination committed the last file group."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def save(self, job: str, state: Any) -> None:
        if state.last_status == "ok":
            raise SystemExit("killed between the destination commit and the state save")
        self.inner.save(job, state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_large_files_stream_and_a_death_before_the_state_save_does_not_double(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import copyjob.connectors.files.readers

    import copyjob.file_copy

    monkeypatch.setattr(copyjob.file_copy, "SMALL_FILE_BYTES", 10_000)  # these files stream
    monkeypatch.setattr(copyjob.connectors.files.readers, "BLOCK_BYTES", 8192)  # in many blocks
    src = tmp_path / "in"
    lines = [json.dumps({"id": i, "v": "x" * 20}) for i in range(3000)]
    lines[2500] = json.dumps({"id": 2500, "v": "y", "late": 1})  # a key first seen far into the file
    put(src, "a.jsonl", "\n".join(lines) + "\n", T0)
    put(src, "b.jsonl", jsonl_rows(range(3000, 3100)), T0 + S)
    j = job(tmp_path, "duckdb:///wh.duckdb", [{"name": "ev", "pattern": "*.jsonl"}], mode="incremental")
    loaded = load_job(j)
    url = default_state_url(loaded.path)
    dying = JobRun(loaded, lambda: DiesOnSave(open_state_store(url)))
    with pytest.raises(SystemExit):
        dying.run()
    dying.close()
    put(src, "c.jsonl", jsonl_rows(range(3100, 3110)), T0 + 2 * S)
    assert run_ok(j)["ev"].rows_read == 10
    db = tmp_path / "wh.duckdb"
    assert duckdb_rows(db, "SELECT count(*), count(DISTINCT id), count(late) FROM ev") == [(3110, 3110, 1)]


# ---------------------------------------------------------------- S3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_s3_source_and_destination(tmp_path: Path, s3_endpoint: str) -> None:
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http", access_key="k",
                           secret_key="s", region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("lake")
    for name, ids in (("in/2026/a.csv", range(1, 4)), ("in/2026/b.csv", range(4, 6))):
        with fs.open_output_stream(f"lake/{name}") as f:
            f.write(csv_rows(ids).encode())
    options = {"endpoint_url": s3_endpoint, "access_key": "k", "secret_key": "s", "region": "us-east-1"}
    j = write_job(tmp_path / "job.yaml", {
        "job": "s3", "source": {"url": "s3://lake/in", "options": options},
        "destination": {"url": "sqlite:///out.db"}, "copy": {"mode": "incremental"},
        "tables": [{"name": "sales", "pattern": "**/*.csv"}]})
    run_ok(j)
    assert sqlite_rows(tmp_path / "out.db", "SELECT count(*) FROM sales") == [(5,)]
    with fs.open_output_stream("lake/in/2026/c.csv") as f:
        f.write(csv_rows(range(6, 8)).encode())
    run_ok(j)
    assert sqlite_rows(tmp_path / "out.db", "SELECT count(*), count(DISTINCT id) FROM sales") == [(7, 7)]
    # to S3, with the credentials from the environment this time
    to_s3 = write_job(tmp_path / "to_s3.yaml", {
        "job": "to-s3", "source": {"url": "./in"}, "destination": {"url": "s3://lake/out"},
        "tables": [{"name": "sales", "pattern": "*.csv"}]})
    put(tmp_path / "in", "x.csv", csv_rows(range(1, 3)), T0)
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": s3_endpoint}
    out = copyjob("run", to_s3, env=env)
    assert out.code == 0, out.output
    with fs.open_input_file("lake/out/sales/x.parquet") as f:
        assert pq.read_table(f).column("id").to_pylist() == [1, 2]
    assert fs.get_file_info("lake/out/_copyjob_state/to-s3/sales.json").type == pafs.FileType.File


def test_s3_patterns_stay_inside_the_prefix(tmp_path: Path, s3_endpoint: str) -> None:
    import pyarrow.fs as pafs
    from copyjob.connectors.files.filesystem import list_files, open_root

    from copyjob.core.errors import ConfigurationError
    from copyjob.filesets import endpoint_url

    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http", access_key="k",
                           secret_key="s", region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("lake")
    for name in ("secret.csv", "in/a.csv"):
        with fs.open_output_stream(f"lake/{name}") as f:
            f.write(csv_rows(range(1, 3)).encode())
    options = {"endpoint_url": s3_endpoint, "access_key": "k", "secret_key": "s", "region": "us-east-1"}
    for pattern in ("../secret.csv", "in/../../lake/secret.csv", "/lake/secret.csv"):
        j = write_job(tmp_path / "job.yaml", {
            "job": "s3", "source": {"url": "s3://lake/in", "options": options},
            "destination": {"url": "sqlite:///out.db"}, "tables": [{"name": "sales", "pattern": pattern}]})
        out = copyjob("run", j)
        line = next(i for i, text in enumerate(j.read_text().splitlines(), 1) if "pattern:" in text)
        assert out.code == 2 and f"{j}:{line}: tables[0].pattern: {pattern!r}" in out.output, out.output
        assert "the source's S3 prefix" in out.output
        assert not (tmp_path / "out.db").exists()
    loaded = load_job(write_job(tmp_path / "ok.yaml", {
        "job": "s3", "source": {"url": "s3://lake/in", "options": options},
        "destination": {"url": "sqlite:///out.db"}, "tables": [{"name": "sales", "pattern": "*.csv"}]}))
    root = open_root(endpoint_url(loaded.job.source, loaded.base_dir))
    assert [f.path for f in list_files(root, "*.csv")] == ["a.csv"]
    with pytest.raises(ConfigurationError, match="leaves s3://lake/in"):
        list_files(root, "../secret.csv")


# ---------------------------------------------------------------- the job file


def load_error(tmp_path: Path, source: str, tables: list[dict[str, Any]], **copy: Any) -> JobFileError:
    j = job(tmp_path, "sqlite:///out.db", tables, source=source, **copy)
    with pytest.raises(JobFileError) as caught:
        load_job(j)
    return caught.value


def test_job_file_checks_name_the_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, "sqlite:///src.db", [{"name": "t", "pattern": "*.csv"}])
    assert err.field == "tables[0].pattern" and err.line == 9
    err = load_error(tmp_path, "./in", [{"name": "t"}])
    assert err.field == "tables[0].pattern" and "required for a file source" in str(err)
    err = load_error(tmp_path, "./in", [{"name": "t", "pattern": "*.txt"}])
    assert err.field == "tables[0].format" and err.line == 9 and "cannot tell the format" in str(err)
    err = load_error(tmp_path, "./in", [{"name": "t", "pattern": "*.csv", "incremental_column": "x"}])
    assert err.field == "tables[0].incremental_column"
    loaded = load_job(job(tmp_path, "sqlite:///o.db", [{"name": "t", "pattern": "*.csv"}], mode="incremental"))
    assert loaded.tables[0].mode == "incremental"


def test_merge_needs_a_key_and_keys_must_be_columns(tmp_path: Path) -> None:
    put(tmp_path / "in", "a.csv", csv_rows(range(1, 3)), T0)
    no_key = copyjob("run", job(tmp_path, "sqlite:///out.db", [{"name": "t", "pattern": "*.csv"}],
                                update_method="merge"))
    assert no_key.code == 2 and "tables[0].key: merge needs a key" in no_key.output
    with pytest.raises(JobFileError, match="key column 'nope' is not a column"):
        run_ok(job(tmp_path, "sqlite:///out.db", [{"name": "t", "pattern": "*.csv", "key": ["nope"]}]))
    with pytest.raises(JobFileError, match="does not support merge"):
        run_ok(job(tmp_path, "file:out", [{"name": "t", "pattern": "*.csv", "key": ["id"]}],
                   update_method="merge"))
