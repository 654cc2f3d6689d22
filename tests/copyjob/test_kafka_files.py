"""File sources with transport: kafka, through the real CLI, on the session's real broker: a folder (incremental,
merge and append, bad files quarantined, capture and apply apart, stream) and S3 (a local moto server) whose
endpoint and credentials come from the job's ``options:``."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.copyjob.test_kafka_pipeline import kafka_job, spawn, wait_for
from tests.helpers import copyjob, sqlite_rows, write_job
from tests.services.kafka import KafkaBroker

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01 00:00:00 UTC


def put(folder: Path, name: str, text: str, mtime_ns: int) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def csv_text(rows: dict[int, str]) -> str:
    return "id,name,amount\n" + "".join(f"{i},{name},{i}.25\n" for i, name in rows.items())


def expected(files: dict[str, dict[int, str]]) -> list[tuple[Any, ...]]:
    """The rows the files hold: (id, name, amount, _source_file), by id."""
    return sorted((i, name, i + 0.25, path) for path, rows in files.items() for i, name in rows.items())


def last_run(job_file: Path) -> dict[str, Any]:
    out = copyjob("history", job_file, "--json")
    assert out.code == 0, out.output
    run: dict[str, Any] = json.loads(out.stdout)[0]
    return run


def rows_read(job_file: Path) -> int:
    return int(last_run(job_file)["tables"][0]["rows_read"])


def table_rows(db: Path, sql: str) -> list[tuple[Any, ...]] | None:
    """The query's rows, or None while the table is not there yet."""
    import sqlite3

    try:
        return sqlite_rows(db, sql)
    except sqlite3.Error:
        return None


# ---------------------------------------------------------------- a folder


def test_folder_incremental_merge_through_kafka(tmp_path: Path, kafka_broker: KafkaBroker) -> None:
    src, out = tmp_path / "in", tmp_path / "out.db"
    files = {"a.csv": {1: "a1", 2: "a2", 3: "a3"}, "b.csv": {4: "b4", 5: "b5"}}
    put(src, "a.csv", csv_text(files["a.csv"]), T0)
    put(src, "b.csv", csv_text(files["b.csv"]), T0 + S)
    j, _ = kafka_job(tmp_path, kafka_broker, "./in", "sqlite:///out.db",
                     [{"name": "sales", "pattern": "*.csv", "key": ["id"], "source_file_column": True}],
                     mode="incremental", update_method="merge")
    assert copyjob("validate", j).code == 0
    query = "SELECT id, name, amount, _source_file FROM sales ORDER BY id"

    first = copyjob("run", j)
    assert first.code == 0, first.output
    assert sqlite_rows(out, query) == expected(files)
    assert rows_read(j) == 5 and last_run(j)["tables"][0]["mode"] == "full"

    # a new file and a file rewritten in place: only they are published, and merge replaces a.csv's rows
    files["c.csv"] = {6: "c6", 7: "c7"}
    put(src, "c.csv", csv_text(files["c.csv"]), T0 + 2 * S)
    files["a.csv"] = {1: "a1 changed", 2: "a2 changed", 3: "a3 changed"}
    put(src, "a.csv", csv_text(files["a.csv"]), T0 + 3 * S)
    second = copyjob("run", j)
    assert second.code == 0, second.output
    assert rows_read(j) == 5 and last_run(j)["tables"][0]["mode"] == "incremental"
    assert sqlite_rows(out, query) == expected(files)

    # a bad file is quarantined: named with its line, the good file beside it still arrives, nothing of it does
    put(src, "d.csv", csv_text({8: "d8"}), T0 + 4 * S)
    put(src, "e.csv", "id,name,amount\n9,e9,9.25\n10,too,many,fields\n", T0 + 5 * S)
    bad = copyjob("run", j)
    assert bad.code == 1, bad.output
    assert "e.csv:3" in bad.output
    files["d.csv"] = {8: "d8"}
    assert sqlite_rows(out, query) == expected(files)

    # nothing new: nothing published, the bad file stays quarantined (and is said to)
    again = copyjob("run", j)
    assert again.code == 0, again.output
    assert rows_read(j) == 0 and "stay quarantined" in again.output
    assert sqlite_rows(out, query) == expected(files)

    # fixed in place: read again
    files["e.csv"] = {9: "e9", 10: "e10"}
    put(src, "e.csv", csv_text(files["e.csv"]), T0 + 6 * S)
    fixed = copyjob("run", j)
    assert fixed.code == 0, fixed.output
    assert rows_read(j) == 2
    assert sqlite_rows(out, query) == expected(files)


def test_folder_append_capture_then_apply_nothing_doubled(tmp_path: Path, kafka_broker: KafkaBroker) -> None:
    src, out = tmp_path / "in", tmp_path / "out.db"
    lines = [json.dumps({"id": i, "tags": [i]}) + "\n" for i in range(1, 8)]
    put(src, "2026/01.jsonl", "".join(lines[:3]), T0)
    put(src, "2026/02.jsonl", "".join(lines[3:5]), T0 + S)
    j, _ = kafka_job(tmp_path, kafka_broker, "./in", "sqlite:///out.db",
                     [{"name": "events", "pattern": "**/*.jsonl"}], mode="incremental", update_method="append")
    captured = copyjob("capture", j)
    assert captured.code == 0, captured.output
    applied = copyjob("apply", j, "--until-caught-up")
    assert applied.code == 0, applied.output
    assert sqlite_rows(out, "SELECT id, tags, _op FROM events ORDER BY id") == [
        (i, f"[{i}]", "r") for i in range(1, 6)]

    put(src, "2026/03.jsonl", "".join(lines[5:]), T0 + 2 * S)
    second = copyjob("run", j)
    assert second.code == 0, second.output
    assert rows_read(j) == 2
    assert sqlite_rows(out, "SELECT count(*), count(DISTINCT id) FROM events") == [(7, 7)]
    position = json.loads(sqlite_rows(out, "SELECT _position FROM events WHERE id = 7")[0][0])
    assert position["file"] == "2026/03.jsonl" and position["mtime_ns"] == T0 + 2 * S


def test_folder_stream_picks_up_new_files(tmp_path: Path, kafka_broker: KafkaBroker) -> None:
    src, out = tmp_path / "in", tmp_path / "out.db"
    put(src, "a.csv", csv_text({1: "a1", 2: "a2"}), T0)
    j, _ = kafka_job(tmp_path, kafka_broker, "./in", "sqlite:///out.db",
                     [{"name": "sales", "pattern": "*.csv", "key": ["id"]}], mode="incremental",
                     update_method="merge")
    proc = spawn("stream", j)

    def streamed(rows: list[tuple[Any, ...]]) -> bool:
        if proc.poll() is not None:
            stdout, stderr = proc.communicate()
            raise AssertionError(f"stream ended ({proc.returncode}): {stdout}{stderr}")
        return table_rows(out, "SELECT id, name FROM sales ORDER BY id") == rows

    try:
        wait_for(lambda: streamed([(1, "a1"), (2, "a2")]), what="the first pass")
        put(src, "b.csv", csv_text({3: "b3"}), T0 + S)
        put(src, "a.csv", csv_text({1: "a1 changed", 2: "a2"}), T0 + 2 * S)
        wait_for(lambda: streamed([(1, "a1 changed"), (2, "a2"), (3, "b3")]), what="the new and the rewritten file")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout + stderr


# ---------------------------------------------------------------- S3 with options


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BUCKET = "kafka-files"
"""Not another test's bucket: moto's servers in one process share their buckets."""


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The test's bucket, made; and no AWS_* variables: only the job's options may tell where S3 is and who we
    are."""
    import pyarrow.fs as pafs

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    fs = pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http", access_key="k",
                           secret_key=SECRET, region="us-east-1", allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    return fs


SECRET = "s3cret-value"


def with_options(job_file: Path, side: str, endpoint: str) -> None:
    job = yaml.safe_load(job_file.read_text())
    job[side]["options"] = {"endpoint_url": endpoint, "access_key": "k", "secret_key": SECRET,
                            "region": "us-east-1"}
    write_job(job_file, job)


def test_s3_source_with_options_through_kafka(tmp_path: Path, kafka_broker: KafkaBroker, s3_endpoint: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fs = s3(s3_endpoint, monkeypatch)

    def upload(name: str, rows: dict[int, str]) -> None:
        with fs.open_output_stream(f"{BUCKET}/in/{name}") as f:
            f.write(csv_text(rows).encode())

    upload("2026/a.csv", {1: "a1", 2: "a2", 3: "a3"})
    upload("2026/b.csv", {4: "b4"})
    j, _ = kafka_job(tmp_path, kafka_broker, f"s3://{BUCKET}/in", "sqlite:///out.db",
                     [{"name": "sales", "pattern": "**/*.csv", "key": ["id"]}], mode="incremental",
                     update_method="merge")
    with_options(j, "source", s3_endpoint)
    assert copyjob("validate", j).code == 0

    first = copyjob("run", j)
    assert first.code == 0, first.output
    assert SECRET not in first.output
    assert sqlite_rows(tmp_path / "out.db", "SELECT id, name FROM sales ORDER BY id") == [
        (1, "a1"), (2, "a2"), (3, "a3"), (4, "b4")]
    upload("2026/c.csv", {5: "c5", 6: "c6"})  # S3 keeps whole seconds: likely the time of the others
    second = copyjob("run", j)
    assert second.code == 0, second.output
    assert rows_read(j) == 2
    assert sqlite_rows(tmp_path / "out.db", "SELECT count(*), count(DISTINCT id) FROM sales") == [(6, 6)]


def test_s3_destination_with_options_through_kafka(tmp_path: Path, kafka_broker: KafkaBroker, s3_endpoint: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs = s3(s3_endpoint, monkeypatch)
    put(tmp_path / "in", "x.csv", csv_text({1: "x1", 2: "x2"}), T0)
    j, _ = kafka_job(tmp_path, kafka_broker, "./in", f"s3://{BUCKET}/out",
                     [{"name": "sales", "pattern": "*.csv"}], update_method="append")
    with_options(j, "destination", s3_endpoint)
    out = copyjob("run", j)
    assert out.code == 0, out.output
    assert SECRET not in out.output
    ids = []
    for info in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/out/sales")):
        if info.path.endswith(".parquet"):  # a file per partition's batch
            with fs.open_input_file(info.path) as f:
                ids += pq.read_table(f).column("id").to_pylist()
    assert sorted(ids) == [1, 2]
