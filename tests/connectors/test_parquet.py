"""Parquet destination against a folder under tmp_path; tables are read back with pyarrow.dataset. What is the
folder layout's own (file names and sizes, hidden files, the schema and marker files, type metadata); the
behaviour every destination shares is tested in test_destination_contract.py."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from copyjob.connectors.parquet import SCHEMA_FILE, ParquetDestination, data_files

from copyjob.core.contracts import StateMarker
from copyjob.core.errors import ConfigurationError, TableNotFound
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url

UTC = dt.UTC
T = LogicalType


def _all_types(name: str = "all types", schema: str | None = None) -> TableSchema:
    return TableSchema(
        table=TableName(name, schema),
        columns=(
            Column("id", T("int64"), nullable=False),
            Column("i16", T("int16")),
            Column("i32", T("int32")),
            Column("f32", T("float32")),
            Column("f64", T("float64")),
            Column("dec", T("decimal", precision=12, scale=2)),
            Column("huge", T("decimal", precision=50, scale=5)),
            Column("free", T("decimal")),
            Column("s", T("string")),
            Column("vs", T("string", length=20)),
            Column("b", T("bool")),
            Column("d", T("date")),
            Column("t", T("time")),
            Column("ts", T("timestamp")),
            Column("tz", T("timestamptz")),
            Column("bin", T("binary")),
            Column("u", T("uuid")),
            Column("j", T("json")),
        ),
        primary_key=("id",),
    )


ROWS: list[dict[str, Any]] = [
    {
        "id": 1, "i16": -32768, "i32": 2_147_483_647, "f32": 1.5, "f64": 0.1, "dec": Decimal("1234567890.12"),
        "huge": Decimal("123456789012345678901234567890123456789012345.12345"),
        "free": "3.14159265358979323846264338327950288", "s": "héllo 'world'", "vs": "short", "b": True,
        "d": dt.date(1, 1, 1), "t": dt.time(23, 59, 59, 999999), "ts": dt.datetime(2024, 2, 29, 12, 30, 45, 123456),
        "tz": dt.datetime(2024, 2, 29, 12, 30, 45, 1, tzinfo=UTC), "bin": b"\x00\xff\x10",
        "u": str(uuid.UUID(int=7)), "j": '{"a": [1, 2.5, null]}',
    },
    {"id": 2, **{c: None for c in ("i16", "i32", "f32", "f64", "dec", "huge", "free", "s", "vs", "b", "d", "t",
                                   "ts", "tz", "bin", "u", "j")}},
]


def _batch(schema: TableSchema, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema.arrow_schema())


def _dest(root: Path, query: str = "") -> ParquetDestination:
    return ParquetDestination(parse_url(f"parquet:///{root}{query}"))


def _load(dest: ParquetDestination, schema: TableSchema, rows: list[dict[str, Any]], method: Any = "append",
          key: tuple[str, ...] = (), truncate: bool = False, marker: StateMarker | None = None) -> None:
    session = dest.begin_load(schema, method, key, truncate=truncate)
    session.write(_batch(schema, rows))
    session.commit(marker)


def _read(dest: ParquetDestination, table: TableName) -> list[dict[str, Any]]:
    """What any reader of the folder sees: pyarrow.dataset with the table's (unified) schema."""
    schema = dest.reflect(table)
    assert schema is not None
    dataset = ds.dataset(dest.folder(table), format="parquet", schema=schema.arrow_schema())
    return dataset.to_table().to_pylist()


def _ids(dest: ParquetDestination, table: TableName) -> list[Any]:
    return sorted(r["id"] for r in _read(dest, table))


@pytest.fixture
def dest(tmp_path: Path) -> ParquetDestination:
    return _dest(tmp_path / "lake")


def _types(schema: TableSchema) -> list[tuple[str, str, bool]]:
    return [(c.name, str(c.type), c.nullable) for c in schema.columns]


def _simple(name: str = "t") -> TableSchema:
    return TableSchema(TableName(name), (Column("id", T("int64"), False), Column("v", T("string")),
                                         Column("at", T("timestamptz"))), primary_key=("id",))


# ---------------------------------------------------------------- schema


def test_create_table_then_reflect_gives_the_same_schema(dest: ParquetDestination) -> None:
    schema = _all_types(schema="sales")
    assert dest.reflect(schema.table) is None
    dest.create_table(schema)
    assert dest.folder(schema.table) == dest.root / "sales.all types"
    reflected = dest.reflect(schema.table)
    assert reflected is not None
    assert _types(reflected) == _types(schema) and reflected.primary_key == ("id",)
    assert _read(dest, schema.table) == []  # an empty table reflects and reads
    dest.create_table(TableSchema(TableName("nokey"), schema.columns, ("id",)), primary_key=False)
    assert dest.reflect(TableName("nokey")).primary_key == ()  # type: ignore[union-attr]


def test_reflects_files_written_by_other_tools(dest: ParquetDestination) -> None:
    folder = dest.root / "foreign"
    folder.mkdir()
    pq.write_table(pa.table({"a": pa.array([1], pa.int32()), "b": pa.array(["x"])}), folder / "one.parquet")
    pq.write_table(pa.table({"a": pa.array([2], pa.int32()), "c": pa.array([dt.datetime(2024, 1, 1)],
                                                                            pa.timestamp("ms", tz="UTC"))}),
                   folder / "two.parquet")
    reflected = dest.reflect(TableName("foreign"))
    assert reflected is not None
    assert [(c.name, str(c.type)) for c in reflected.columns] == [("a", "int32"), ("b", "string"),
                                                                  ("c", "timestamptz")]


def test_files_carry_the_logical_types(dest: ParquetDestination) -> None:
    schema = _all_types()
    dest.create_table(schema)
    _load(dest, schema, ROWS)
    (path,) = data_files(dest.folder(schema.table))
    file_schema = pq.read_schema(path)
    assert file_schema.field("u").metadata[b"copyjob.type"] == b"uuid"
    assert file_schema.field("huge").type == pa.decimal256(50, 5)
    (dest.folder(schema.table) / SCHEMA_FILE).unlink()  # the files alone still give the logical types
    reflected = dest.reflect(schema.table)
    assert reflected is not None and _types(reflected) == _types(schema)


def test_names_that_cannot_be_folders_are_refused(dest: ParquetDestination) -> None:
    for bad in (TableName("a/b"), TableName(".."), TableName("x", "a/b"), TableName("")):
        with pytest.raises(ConfigurationError):
            dest.folder(bad)


# ---------------------------------------------------------------- writing


def test_round_trip_of_every_type(dest: ParquetDestination) -> None:
    schema = _all_types()
    dest.create_table(schema)
    _load(dest, schema, ROWS)
    assert _read(dest, schema.table) == ROWS


def test_append_adds_files_beside_the_old_ones(dest: ParquetDestination) -> None:
    schema = _simple()
    dest.create_table(schema)
    _load(dest, schema, [{"id": 1}], marker=StateMarker("job", "t", "run 1/a", {}))
    _load(dest, schema, [{"id": 2}])
    files = data_files(dest.folder(schema.table))
    assert len(files) == 2 and all(f.name.endswith("-00000.parquet") for f in files)
    assert any(f.name.startswith("run_1_a-") for f in files)  # <run>-<load>-<n>.parquet
    assert _ids(dest, schema.table) == [1, 2]


def test_overwrite_and_truncate_leave_only_the_new_files(dest: ParquetDestination) -> None:
    schema = _simple()
    dest.create_table(schema)
    _load(dest, schema, [{"id": 1}])
    _load(dest, schema, [{"id": 2}])
    _load(dest, schema, [{"id": 3}, {"id": 4}], method="overwrite")
    assert _ids(dest, schema.table) == [3, 4]
    assert len(data_files(dest.folder(schema.table))) == 1
    _load(dest, schema, [{"id": 5}], truncate=True)
    assert _ids(dest, schema.table) == [5]
    assert len(data_files(dest.folder(schema.table))) == 1
    _load(dest, schema, [], method="overwrite")
    assert _ids(dest, schema.table) == [] and data_files(dest.folder(schema.table)) == []
    assert [p.name for p in dest.folder(schema.table).iterdir()] == [SCHEMA_FILE]  # no temporary file left


def test_rows_per_file_is_bounded(tmp_path: Path) -> None:
    dest = _dest(tmp_path / "lake", "?rows_per_file=3&compression=snappy")
    schema = _simple()
    dest.create_table(schema)
    session = dest.begin_load(schema, "append", ())
    session.write(_batch(schema, [{"id": i} for i in range(5)]))
    session.write(_batch(schema, [{"id": i} for i in range(5, 10)]))
    session.commit(None)
    files = data_files(dest.folder(schema.table))
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [3, 3, 3, 1]
    assert _ids(dest, schema.table) == list(range(10))
    with pytest.raises(ConfigurationError):
        _dest(tmp_path / "lake", "?rows_per_file=0")


def test_merge_result_equals_expected(tmp_path: Path) -> None:
    dest = _dest(tmp_path / "lake", "?rows_per_file=2")
    schema = _simple()
    dest.create_table(schema)
    _load(dest, schema, [{"id": i, "v": f"old{i}"} for i in (1, 2, 3)])
    _load(dest, schema, [{"id": 5, "v": "old5"}])
    session = dest.begin_load(schema, "merge", ("id",))
    session.write(_batch(schema, [{"id": 2, "v": "first"}, {"id": 4, "v": "new"}]))
    session.write(_batch(schema, [{"id": 2, "v": "last"}, {"id": 5, "v": "five"}]))
    session.commit(None)
    assert sorted((r["id"], r["v"]) for r in _read(dest, schema.table)) == [
        (1, "old1"), (2, "last"), (3, "old3"), (4, "new"), (5, "five")]
    assert len(data_files(dest.folder(schema.table))) == 3  # the table was rewritten, 2 rows a file


def test_a_reader_during_a_load_sees_only_published_files(dest: ParquetDestination) -> None:
    schema = _simple()
    dest.create_table(schema)
    _load(dest, schema, [{"id": 1}])
    session = dest.begin_load(schema, "overwrite", ())
    session.write(_batch(schema, [{"id": 2}]))
    folder = dest.folder(schema.table)
    assert any(p.name.startswith(".") for p in folder.iterdir())  # the load's file exists, hidden
    assert _ids(dest, schema.table) == [1]
    session.commit(None)
    assert _ids(dest, schema.table) == [2]
    assert not any(p.name.startswith(".") for p in folder.iterdir())


def test_abort_leaves_the_folder_as_it_was(dest: ParquetDestination) -> None:
    schema = _simple()
    dest.create_table(schema)
    _load(dest, schema, [{"id": i, "v": f"v{i}"} for i in (1, 2, 3)], marker=StateMarker("job", "t", "run-1", {}))
    before = sorted(p.name for p in dest.folder(schema.table).iterdir())
    for method in ("append", "overwrite", "merge"):
        session = dest.begin_load(schema, method, ("id",))
        session.write(_batch(schema, [{"id": 1, "v": "changed"}, {"id": 7, "v": "new"}]))
        session.delete_keys(pa.RecordBatch.from_pydict({"id": [2]}, schema=schema.select(["id"]).arrow_schema()))
        session.update_columns(pa.RecordBatch.from_pydict({"id": [3], "v": ["zzz"]},
                                                          schema=schema.select(["id", "v"]).arrow_schema()))
        session.abort()
    assert sorted(p.name for p in dest.folder(schema.table).iterdir()) == before  # no temporary file left


def test_the_marker_is_a_json_file_per_job_and_table(dest: ParquetDestination) -> None:
    schema = _simple("sales.orders")
    dest.create_table(schema)
    marker = StateMarker("my job", "sales.orders", "run-1", {"watermark": "2024-01-01T00:00:00+00:00"})
    _load(dest, schema, [{"id": 1}], marker=marker)
    path = dest.root / "_copyjob_state" / "my job" / "sales.orders.json"
    assert json.loads(path.read_text())["run_id"] == "run-1"
    _load(dest, schema, [{"id": 2}], marker=StateMarker("my job", "sales.orders", "run-2", {"n": 2}))
    assert json.loads(path.read_text())["run_id"] == "run-2"
    assert [p.name for p in path.parent.iterdir()] == ["sales.orders.json"]  # no temporary file left


def test_missing_table(dest: ParquetDestination) -> None:
    with pytest.raises(TableNotFound):
        dest.begin_load(_simple("nope"), "append", ())
    with pytest.raises(TableNotFound):
        dest.add_columns(TableName("nope"), [Column("x", T("int64"))])
