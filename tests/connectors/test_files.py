"""Files as a source and a destination, against folders under tmp_path: listing by glob, reading CSV, JSON lines
and Parquet (bad files named with their line), writing a folder per table with temporary names."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from copyjob.connectors.files import FileDestination, FileSource
from copyjob.connectors.files.destination import output_name
from copyjob.connectors.files.filesystem import glob_regex
from copyjob.connectors.files.readers import JsonLinesReader

from copyjob.core.contracts import FileColumnsGrew, FileInfo, FileSet, StateMarker
from copyjob.core.errors import BadFile, ConfigurationError
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url
from copyjob.jobfile import CsvOptions


def source(root: Path) -> FileSource:
    return FileSource(parse_url(f"file://{root}"))


def fileset(fmt: str, pattern: str = "*", **csv: object) -> FileSet:
    return FileSet(name="t", pattern=pattern, format=fmt, csv=CsvOptions(**csv))  # type: ignore[arg-type]


def info(root: Path, name: str) -> FileInfo:
    st = (root / name).stat()
    return FileInfo(name, st.st_mtime_ns, st.st_size)


def read(root: Path, name: str, files: FileSet, known: TableSchema | None = None) -> pa.Table:
    reader = source(root).read_file(files, info(root, name), known)
    try:
        schema = TableSchema(TableName("t"), reader.columns)
        return pa.Table.from_batches(list(reader.batches(schema)), schema.arrow_schema())
    finally:
        reader.close()


def bad(root: Path, name: str, files: FileSet) -> BadFile:
    with pytest.raises(BadFile) as caught:
        read(root, name, files)
    return caught.value


# ---------------------------------------------------------------- listing


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("*.csv", "a.csv", True), ("*.csv", "sub/a.csv", False), ("**/*.csv", "a.csv", True),
    ("**/*.csv", "x/y/a.csv", True), ("sub/*.csv", "sub/a.csv", True), ("[ab].csv", "b.csv", True),
    ("[!ab].csv", "b.csv", False), ("?.csv", "ab.csv", False), ("2026/**", "2026/01/x.json", True),
])
def test_glob(pattern: str, path: str, matches: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(path)) is matches


def test_listing_is_recursive_with_double_star_skips_hidden_and_keeps_nanoseconds(tmp_path: Path) -> None:
    for name in ("a.csv", "sub/b.csv", "sub/deep/c.csv", ".hidden.csv", "_tmp/d.csv", "e.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n1\n")
    os.utime(tmp_path / "a.csv", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    src = source(tmp_path)
    assert sorted(f.path for f in src.list_files("*.csv")) == ["a.csv"]
    assert sorted(f.path for f in src.list_files("**/*.csv")) == ["a.csv", "sub/b.csv", "sub/deep/c.csv"]
    assert sorted(f.path for f in src.list_files("sub/*.csv")) == ["sub/b.csv"]
    assert src.list_files("nothing/*.csv") == []
    a = next(f for f in src.list_files("*.csv"))
    assert a.mtime_ns == 1_700_000_000_123_456_789 and a.size == 4


def test_a_missing_source_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        source(tmp_path / "nope")


# ---------------------------------------------------------------- CSV


def test_csv_types_are_inferred_and_known_types_win(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,amount,at,name,empty\n1,1.50,2026-01-01 10:00:00,x,\n2,,2026-01-02 "
                                    "00:00:00,,\n")
    table = read(tmp_path, "a.csv", fileset("csv"))
    kinds = {f.name: str(f.type) for f in table.schema}
    assert kinds == {"id": "int64", "amount": "double", "at": "timestamp[us]", "name": "string", "empty": "string"}
    assert table.column("name").to_pylist() == ["x", None]
    known = TableSchema(TableName("t"), (Column("amount", LogicalType("decimal", 12, 2)),
                                         Column("id", LogicalType("string"))))
    reader = source(tmp_path).read_file(fileset("csv"), info(tmp_path, "a.csv"), known)
    assert {c.name: str(c.type) for c in reader.columns}["amount"] == "decimal(12,2)"
    reader.close()


def test_csv_options_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes("1;café;NA\n2;b;3\n".encode("latin-1"))
    files = fileset("csv", delimiter=";", header=False, encoding="latin-1", null_values=["NA"])
    table = read(tmp_path, "a.csv", files)
    assert table.column_names == ["f0", "f1", "f2"]
    assert table.to_pylist()[0] == {"f0": 1, "f1": "café", "f2": None}
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(b"id,name\n1,a\n2,b\n"))
    assert read(tmp_path, "b.csv.gz", fileset("csv")).num_rows == 2


def test_csv_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    rows = "".join(f"{i},x\n" for i in range(5000))
    (tmp_path / "a.csv").write_text("id,name\n" + rows + "5000,x,extra\n")
    err = bad(tmp_path, "a.csv", fileset("csv"))
    assert err.line == 5002 and "expected 2 fields, got 3" in str(err)
    assert str(err).startswith(f"{tmp_path}/a.csv:5002: ")


def test_csv_bad_encoding_and_bad_value_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"id,name\n1,ok\n2,ok\n3,\xff\xfe\n")
    err = bad(tmp_path, "a.csv", fileset("csv"))
    assert err.line == 4 and "cannot be decoded as utf-8" in str(err)
    (tmp_path / "b.csv").write_text("id,name\n" + "".join(f"{i},x\n" for i in range(20000)) + "oops,y\n")
    known = TableSchema(TableName("t"), (Column("id", LogicalType("int64")),))
    with pytest.raises(BadFile) as caught:
        read(tmp_path, "b.csv", fileset("csv"), known)
    assert caught.value.line == 20002 and "'oops'" in str(caught.value)


def test_an_empty_csv_has_no_rows(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("")
    assert read(tmp_path, "a.csv", fileset("csv")).num_rows == 0


# ---------------------------------------------------------------- JSON lines


def test_jsonl_nested_values_become_json_text_and_source_file_is_added(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"id": 1, "tags": ["a"], "meta": {"k": 1}}\n\n{"id": 2, "extra": true}\n')
    files = FileSet(name="t", pattern="*", format="jsonl", csv=CsvOptions(), source_file_column=True)
    table = read(tmp_path, "a.jsonl", files)
    assert table.to_pylist() == [
        {"id": 1, "tags": '["a"]', "meta": '{"k":1}', "extra": None, "_source_file": "a.jsonl"},
        {"id": 2, "tags": None, "meta": None, "extra": True, "_source_file": "a.jsonl"},
    ]


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"id": 1}\n{"id": 2}\n{"id": 3,}\n')
    assert bad(tmp_path, "a.jsonl", fileset("jsonl")).line == 3
    (tmp_path / "b.jsonl").write_bytes(b'{"id": 1}\n{"id": 2, "s": "\xff"}\n')
    err = bad(tmp_path, "b.jsonl", fileset("jsonl"))
    assert err.line == 2 and "utf-8" in str(err)


def test_jsonl_keys_first_seen_in_a_later_block_ask_for_a_reread(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i}) for i in range(2000)] + [json.dumps({"id": 2000, "late": "x"})]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    src = source(tmp_path)
    reader = JsonLinesReader(src.root, fileset("jsonl"), info(tmp_path, "a.jsonl"), None, batch_rows=1000,
                             block_bytes=4096)
    assert [c.name for c in reader.columns] == ["id"]
    with pytest.raises(FileColumnsGrew) as grew:
        list(reader.batches(TableSchema(TableName("t"), reader.columns)))
    assert [c.name for c in grew.value.columns] == ["late"]
    reader.close()


# ---------------------------------------------------------------- Parquet


def test_parquet_reads_and_a_broken_file_is_bad(tmp_path: Path) -> None:
    table = pa.table({"id": pa.array([1, 2], pa.int32()), "at": pa.array([1, 2], pa.timestamp("ns")),
                      "name": pa.array(["a", "b"]).dictionary_encode()})
    pq.write_table(table, tmp_path / "a.parquet")
    got = read(tmp_path, "a.parquet", fileset("parquet"))
    assert {f.name: str(f.type) for f in got.schema} == {"id": "int32", "at": "timestamp[us]", "name": "string"}
    (tmp_path / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    assert "not a readable Parquet file" in str(bad(tmp_path, "b.parquet", fileset("parquet")))


def test_infer_schema_looks_at_the_newest_readable_file(tmp_path: Path) -> None:
    (tmp_path / "old.csv").write_text("a\n1\n")
    (tmp_path / "new.csv").write_text("a,b\n1,2\n")
    (tmp_path / "newest.csv").write_bytes(b"a,b\n1,\xff\n")
    for i, name in enumerate(("old.csv", "new.csv", "newest.csv")):
        os.utime(tmp_path / name, ns=(i * 10**9, i * 10**9))
    src = source(tmp_path)
    schema = src.infer_schema(fileset("csv"), src.list_files("*.csv"))
    assert schema is not None and schema.column_names == ["a", "b"]


# ---------------------------------------------------------------- destination


SCHEMA = TableSchema(TableName("sales"), (Column("id", LogicalType("int64")), Column("name", LogicalType("string"))))


def destination(root: Path, fmt: str = "parquet") -> FileDestination:
    return FileDestination(parse_url(f"file://{root}?format={fmt}"))


def batch(ids: list[int]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{"id": i, "name": f"n{i}"} for i in ids], SCHEMA.arrow_schema())


def marker(run: str) -> StateMarker:
    return StateMarker(job="j", table="sales", run_id=run, state={"watermark": run})


def test_output_names_follow_the_source_file() -> None:
    assert output_name("2026/01/sales.csv.gz", "parquet") == "2026/01/sales.parquet"
    assert output_name("a.JSONL", "csv") == "a.csv"
    assert output_name("data_2026", "jsonl") == "data_2026.jsonl"


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_one_output_per_source_file_replaced_when_copied_again(tmp_path: Path, fmt: str) -> None:
    dest = destination(tmp_path, fmt)
    dest.create_table(SCHEMA)
    session = dest.begin_load(SCHEMA, "append", ())
    session.begin_file("in/a.csv")
    session.write(batch([1, 2]))
    session.begin_file("b.csv")
    session.write(batch([3]))
    before = sorted(p.name for p in (tmp_path / "sales").rglob("*"))
    assert before[-1] == "_schema.json" and all(n.startswith(".copyjob-") for n in before[:-1])  # nothing shown
    session.commit(marker("r1"))
    assert sorted(str(p.relative_to(tmp_path / "sales")) for p in (tmp_path / "sales").rglob(f"*.{fmt}")) == \
        [f"b.{fmt}", f"in/a.{fmt}"]
    again = dest.begin_load(SCHEMA, "append", ())
    again.begin_file("b.csv")
    again.write(batch([30, 31]))
    again.commit(marker("r2"))
    out = tmp_path / "sales" / f"b.{fmt}"
    if fmt == "parquet":
        ids = pq.read_table(out).column("id").to_pylist()
    elif fmt == "csv":
        ids = pcsv.read_csv(out).column("id").to_pylist()
    else:
        ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [30, 31]
    assert dest.read_marker("j", "sales") == marker("r2")
    assert not list((tmp_path / "sales").glob(".*.tmp"))


def test_abort_leaves_nothing_and_overwrite_replaces_other_files(tmp_path: Path) -> None:
    dest = destination(tmp_path)
    dest.create_table(SCHEMA)
    first = dest.begin_load(SCHEMA, "append", ())
    first.begin_file("a.csv")
    first.write(batch([1]))
    first.abort()
    assert [p.name for p in (tmp_path / "sales").iterdir()] == ["_schema.json"]
    for name in ("a.csv", "b.csv"):
        s = dest.begin_load(SCHEMA, "append", ())
        s.begin_file(name)
        s.write(batch([1]))
        s.commit(None)
    over = dest.begin_load(SCHEMA, "overwrite", ())
    over.begin_file("c.csv")
    over.write(batch([2]))
    over.commit(marker("r"))
    assert sorted(p.name for p in (tmp_path / "sales").iterdir()) == ["_schema.json", "c.parquet"]


def test_rows_not_from_a_file_and_schema_growth(tmp_path: Path) -> None:
    dest = destination(tmp_path)
    assert dest.reflect(SCHEMA.table) is None
    dest.create_table(SCHEMA)
    dest.add_columns(SCHEMA.table, [Column("more", LogicalType("date"))])
    reflected = dest.reflect(SCHEMA.table)
    assert reflected is not None and reflected.column_names == ["id", "name", "more"]
    s = dest.begin_load(SCHEMA, "append", ())
    s.write(batch([7]))
    s.commit(marker("r"))
    (written,) = [p for p in (tmp_path / "sales").iterdir() if p.suffix == ".parquet"]
    assert pq.read_table(written).column("id").to_pylist() == [7]
    with pytest.raises(ConfigurationError, match="merge"):
        dest.begin_load(SCHEMA, "merge", ("id",))
    with pytest.raises(ConfigurationError, match="unknown file format"):
        destination(tmp_path, "xml")


def test_json_lines_are_valid_json_with_nan_and_infinity_as_strings(tmp_path: Path) -> None:
    import math

    schema = TableSchema(TableName("floats"), (Column("id", LogicalType("int64")), Column("f", LogicalType("float64")),
                                               Column("d", LogicalType("date"))))
    dest = destination(tmp_path, "jsonl")
    dest.create_table(schema)
    s = dest.begin_load(schema, "append", ())
    s.write(pa.RecordBatch.from_arrays([pa.array([1, 2, 3, 4]), pa.array([math.nan, math.inf, -math.inf, 1.5]),
                                        pa.array([2**31 - 1, 0, None, -735_160], pa.date32())],
                                       schema=schema.arrow_schema()))
    s.commit(marker("r"))
    (written,) = [p for p in (tmp_path / "floats").iterdir() if p.suffix == ".jsonl"]

    def strict(token: str) -> None:
        raise AssertionError(f"bare {token} is not JSON")

    rows = [json.loads(line, parse_constant=strict) for line in written.read_text().splitlines()]
    assert [r["f"] for r in rows] == ["NaN", "Infinity", "-Infinity", 1.5]
    assert [r["d"] for r in rows] == ["infinity", "1970-01-01", None, "0044-03-15 BC"]


def test_csv_writes_binary_as_postgresql_hex(tmp_path: Path) -> None:
    schema = TableSchema(TableName("blobs"), (Column("id", LogicalType("int64")), Column("b", LogicalType("binary"))))
    dest = destination(tmp_path, "csv")
    dest.create_table(schema)
    s = dest.begin_load(schema, "append", ())
    s.write(pa.RecordBatch.from_arrays([pa.array([1, 2, 3]), pa.array([b"\x00\xff", b"", None])],
                                       schema=schema.arrow_schema()))
    s.commit(marker("r"))
    (written,) = [p for p in (tmp_path / "blobs").iterdir() if p.suffix == ".csv"]
    assert written.read_text().splitlines() == ['"id","b"', '1,"\\x00ff"', '2,"\\x"', "3,"]
