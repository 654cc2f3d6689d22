"""Parquet destination against a folder under tmp_path; tables are read back with pyarrow.dataset."""

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
from copyjob.core.errors import ConfigurationError, DataError, TableNotFound
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


def test_merge_with_a_composite_key_and_into_an_empty_table(dest: ParquetDestination) -> None:
    schema = TableSchema(TableName("pairs"), (Column("a", T("int32")), Column("b", T("string")),
                                              Column("v", T("int64"))))
    dest.create_table(schema)
    _load(dest, schema, [{"a": 1, "b": "y", "v": 0}, {"a": 1, "b": "y", "v": 2}], method="merge", key=("a", "b"))
    assert [(r["a"], r["b"], r["v"]) for r in _read(dest, schema.table)] == [(1, "y", 2)]
    _load(dest, schema, [{"a": 1, "b": "x", "v": 1}], method="append")
    _load(dest, schema, [{"a": 1, "b": "y", "v": 20}, {"a": 2, "b": "y", "v": 3}, {"a": 1, "b": "y", "v": 21}],
          method="merge", key=("a", "b"))
    assert sorted((r["a"], r["b"], r["v"]) for r in _read(dest, schema.table)) == [
        (1, "x", 1), (1, "y", 21), (2, "y", 3)]


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


def test_abort_leaves_table_and_marker_as_before(dest: ParquetDestination) -> None:
    schema = _simple()
    dest.create_table(schema)
    marker = StateMarker("job", "t", "run-1", {"n": 1})
    _load(dest, schema, [{"id": 1, "v": "keep"}], marker=marker)
    before = sorted(p.name for p in dest.folder(schema.table).iterdir())
    for method in ("append", "overwrite", "merge"):
        session = dest.begin_load(schema, method, ("id",))
        session.write(_batch(schema, [{"id": 1, "v": "changed"}, {"id": 3, "v": "new"}]))
        session.abort()
    assert sorted(p.name for p in dest.folder(schema.table).iterdir()) == before
    assert [(r["id"], r["v"]) for r in _read(dest, schema.table)] == [(1, "keep")]
    assert dest.read_marker("job", "t") == marker


def test_marker_is_committed_with_the_data(dest: ParquetDestination) -> None:
    schema = _simple("sales.orders")
    dest.create_table(schema)
    assert dest.read_marker("my job", "sales.orders") is None
    marker = StateMarker("my job", "sales.orders", "run-1", {"watermark": "2024-01-01T00:00:00+00:00"})
    _load(dest, schema, [{"id": 1}], marker=marker)
    path = dest.root / "_copyjob_state" / "my job" / "sales.orders.json"
    assert json.loads(path.read_text())["run_id"] == "run-1"
    assert dest.read_marker("my job", "sales.orders") == marker
    _load(dest, schema, [{"id": 2}], marker=StateMarker("my job", "sales.orders", "run-2", {"n": 2}))
    assert dest.read_marker("my job", "sales.orders") == StateMarker("my job", "sales.orders", "run-2", {"n": 2})
    assert [p.name for p in path.parent.iterdir()] == ["sales.orders.json"]  # no temporary file left
    assert _ids(dest, schema.table) == [1, 2]


def test_add_columns_then_write_with_them(dest: ParquetDestination) -> None:
    schema = _simple()
    dest.create_table(schema)
    _load(dest, schema, [{"id": 1, "v": "a"}])
    extra = (Column("amount", T("decimal", precision=10, scale=2), nullable=False), Column("day", T("date")))
    dest.add_columns(schema.table, extra)
    reflected = dest.reflect(schema.table)
    assert reflected is not None
    assert _types(reflected)[-2:] == [("amount", "decimal(10,2)", True), ("day", "date", True)]
    wider = TableSchema(schema.table, reflected.columns, schema.primary_key)
    _load(dest, wider, [{"id": 2, "v": "b", "amount": Decimal("9.99"), "day": dt.date(2024, 1, 1)}])
    rows = sorted(_read(dest, schema.table), key=lambda r: r["id"])
    assert rows[0]["amount"] is None and rows[1]["amount"] == Decimal("9.99")
    _load(dest, wider, [{"id": 1, "v": "c", "amount": Decimal("1.00")}], method="merge", key=("id",))
    rows = sorted(_read(dest, schema.table), key=lambda r: r["id"])
    assert [(r["id"], r["v"], r["amount"]) for r in rows] == [(1, "c", Decimal("1.00")), (2, "b", Decimal("9.99"))]


def test_deferred_primary_key_is_recorded(dest: ParquetDestination) -> None:
    schema = _simple()
    dest.create_table(schema, primary_key=False)
    session = dest.begin_load(schema, "append", (), deferred_key=("id",))
    session.write(_batch(schema, [{"id": 1}]))
    session.commit(None)
    assert dest.reflect(schema.table).primary_key == ("id",)  # type: ignore[union-attr]


def test_nulls_in_a_not_null_column_are_refused(dest: ParquetDestination) -> None:
    schema = _simple()
    dest.create_table(schema)
    session = dest.begin_load(schema, "append", ())
    with pytest.raises(DataError):
        session.write(pa.RecordBatch.from_pylist([{"id": None}], schema=pa.schema([("id", pa.int64())])))
    session.abort()


def test_missing_table(dest: ParquetDestination) -> None:
    with pytest.raises(TableNotFound):
        dest.begin_load(_simple("nope"), "append", ())
    with pytest.raises(TableNotFound):
        dest.add_columns(TableName("nope"), [Column("x", T("int64"))])


def test_identifiers_with_spaces_quotes_and_upper_case(dest: ParquetDestination) -> None:
    schema = TableSchema(TableName('My "odd" Table', "Sch x"),
                         (Column("Key Col", T("int64"), False), Column('say "hi"', T("string")),
                          Column("UPPER", T("bool"))), primary_key=("Key Col",))
    dest.create_table(schema)
    _load(dest, schema, [{"Key Col": 1, 'say "hi"': "x", "UPPER": True}], method="merge", key=("Key Col",))
    reflected = dest.reflect(schema.table)
    assert reflected is not None and _types(reflected) == _types(schema)
    assert _read(dest, schema.table) == [{"Key Col": 1, 'say "hi"': "x", "UPPER": True}]


# ---------------------------------------------------------------- deletes and column updates by key

T0 = dt.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _events() -> TableSchema:
    return TableSchema(TableName("ev"), (Column("code", T("string"), False), Column("at", T("timestamptz"), False),
                                         Column("u", T("uuid")), Column("v", T("int32"))), primary_key=("code", "at"))


def _part(schema: TableSchema, names: list[str], rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([dict(zip(names, r, strict=True)) for r in rows],
                                      schema=schema.select(names).arrow_schema())


def _three(dest: ParquetDestination, primary_key: bool = True) -> TableSchema:
    schema = _simple()
    dest.create_table(schema, primary_key=primary_key)
    _load(dest, schema, [{"id": i, "v": f"v{i}", "at": T0} for i in (1, 2, 3)])
    return schema


def _pairs(dest: ParquetDestination, schema: TableSchema) -> list[tuple[int, str | None]]:
    return sorted((r["id"], r["v"]) for r in _read(dest, schema.table))


def test_delete_keys_by_single_key(dest: ParquetDestination) -> None:
    schema = _three(dest)
    session = dest.begin_load(schema, "merge", ("id",))
    assert session.delete_keys(_part(schema, ["id"], [(2,), (9,), (None,)])) == 1  # missing and NULL: no match
    assert session.delete_keys(_part(schema, ["id"], [(7,), (8,)])) == 0
    assert session.delete_keys(_part(schema, ["id"], [])) == 0
    assert session.delete_keys(_part(schema, ["id"], [(2,)])) == 0  # already deleted in this load
    assert _pairs(dest, schema) == [(1, "v1"), (2, "v2"), (3, "v3")]  # applied at commit
    session.commit(StateMarker("j", "t", "r", {}))
    assert _pairs(dest, schema) == [(1, "v1"), (3, "v3")]
    assert dest.read_marker("j", "t") == StateMarker("j", "t", "r", {})


def test_delete_keys_by_composite_text_and_timestamp_key(tmp_path: Path) -> None:
    dest = _dest(tmp_path / "lake", "?rows_per_file=2")
    schema = _events()
    dest.create_table(schema)
    u = str(uuid.UUID(int=5))
    _load(dest, schema, [{"code": c, "at": T0 + dt.timedelta(seconds=s), "u": u, "v": s}
                         for c in ("x", "X", "it's") for s in (0, 1)])
    keys = pa.RecordBatch.from_pylist(
        [{"at": T0, "code": "x"}, {"at": T0 + dt.timedelta(seconds=1), "code": "it's"},
         {"at": T0 + dt.timedelta(seconds=5), "code": "X"}, {"at": None, "code": "X"}],  # other order: by name
        schema=pa.schema([pa.field("at", pa.timestamp("us", tz="UTC")), pa.field("code", pa.string())]))
    session = dest.begin_load(schema, "append", ())  # append: the table's primary key
    assert session.delete_keys(keys) == 2
    session.commit(None)
    assert sorted((r["code"], r["v"]) for r in _read(dest, schema.table)) == [
        ("X", 0), ("X", 1), ("it's", 0), ("x", 1)]

    uu = TableSchema(TableName("byu"), (Column("u", T("uuid")), Column("v", T("int32"))))  # no primary key
    dest.create_table(uu)
    u1, u2 = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    _load(dest, uu, [{"u": u1, "v": 1}, {"u": u2, "v": 2}, {"u": u1, "v": 3}])
    session = dest.begin_load(uu, "append", ("u",))
    assert session.delete_keys(_part(uu, ["u"], [(u1,)])) == 2
    session.commit(None)
    assert [r["v"] for r in _read(dest, uu.table)] == [2]


def test_delete_keys_needs_a_key(dest: ParquetDestination) -> None:
    schema = _three(dest, primary_key=False)
    session = dest.begin_load(schema, "append", ())
    with pytest.raises(ConfigurationError, match="needs a key"):
        session.delete_keys(_part(schema, ["id"], [(1,)]))
    session.abort()
    session = dest.begin_load(schema, "append", ("id",))
    with pytest.raises(ConfigurationError, match="key columns"):
        session.delete_keys(_part(schema, ["id", "v"], [(1, "v1")]))
    session.abort()
    assert len(_read(dest, schema.table)) == 3


def test_delete_and_write_in_one_merge_session(dest: ParquetDestination) -> None:
    schema = _three(dest)
    session = dest.begin_load(schema, "merge", ("id",))
    session.write(_batch(schema, [{"id": 3, "v": "staged"}]))
    assert session.delete_keys(_part(schema, ["id"], [(1,), (3,)])) == 2  # 3 staged before: deleted too
    session.write(_batch(schema, [{"id": 4, "v": "v4"}, {"id": 1, "v": "again"}]))  # after its delete: wins
    session.commit(None)
    assert _pairs(dest, schema) == [(1, "again"), (2, "v2"), (4, "v4")]


def test_deletes_and_updates_in_an_append_load_touch_rows_written_before_them(tmp_path: Path) -> None:
    dest = _dest(tmp_path / "lake", "?rows_per_file=2")
    schema = _three(dest, primary_key=False)
    session = dest.begin_load(schema, "append", ("id",))
    session.write(_batch(schema, [{"id": 4, "v": "v4"}, {"id": 5, "v": "v5"}]))
    assert session.delete_keys(_part(schema, ["id"], [(1,), (4,)])) == 2  # an old row and a row of this load
    assert session.update_columns(_part(schema, ["id", "v"], [(5, "u5"), (2, "u2")])) == 2
    session.write(_batch(schema, [{"id": 4, "v": "again"}, {"id": 5, "v": "later"}]))  # untouched: written after
    session.commit(None)
    assert _pairs(dest, schema) == [(2, "u2"), (3, "v3"), (4, "again"), (5, "later"), (5, "u5")]
    assert {r["at"] for r in _read(dest, schema.table) if r["id"] in (2, 3)} == {T0}


def test_merge_with_truncate_replaces_the_old_rows(dest: ParquetDestination) -> None:
    schema = _three(dest)
    session = dest.begin_load(schema, "merge", ("id",), truncate=True)
    session.write(_batch(schema, [{"id": 9, "v": "v9"}]))
    assert session.delete_keys(_part(schema, ["id"], [(1,)])) == 0  # the table is emptied by this load
    session.commit(None)
    assert _pairs(dest, schema) == [(9, "v9")]


def test_update_columns_keeps_the_other_columns(dest: ParquetDestination) -> None:
    schema = _three(dest)
    session = dest.begin_load(schema, "merge", ("id",))
    session.write(_batch(schema, [{"id": 5, "v": "v5", "at": T0}]))
    updated = session.update_columns(_part(schema, ["id", "v"], [(1, "a1"), (9, "nobody"), (2, "b1"), (2, "b2"),
                                                                 (5, "e1")]))
    assert updated == 2  # 9 is not in the table; 5 is only staged (counted by write); last row of 2 wins
    assert session.update_columns(_part(schema, ["id"], [(3,)])) == 1  # nothing to set: the rows matched
    session.commit(None)
    rows = sorted(_read(dest, schema.table), key=lambda r: r["id"])
    assert [(r["id"], r["v"]) for r in rows] == [(1, "a1"), (2, "b2"), (3, "v3"), (5, "e1")]
    assert {r["at"] for r in rows} == {T0}
    later = T0 + dt.timedelta(days=1)
    session = dest.begin_load(schema, "append", ())
    assert session.update_columns(_part(schema, ["at", "id"], [(later, 3)])) == 1
    session.commit(None)
    assert sorted(_read(dest, schema.table), key=lambda r: r["id"])[2] == {"id": 3, "v": "v3", "at": later}


def test_abort_forgets_deletes_and_updates(dest: ParquetDestination) -> None:
    schema = _three(dest)
    before = sorted(p.name for p in dest.folder(schema.table).iterdir())
    for method in ("merge", "append", "overwrite"):
        session = dest.begin_load(schema, method, ("id",))
        session.write(_batch(schema, [{"id": 7, "v": "v7"}]))
        session.delete_keys(_part(schema, ["id"], [(1,)]))
        session.update_columns(_part(schema, ["id", "v"], [(2, "zzz")]))
        session.abort()
    assert sorted(p.name for p in dest.folder(schema.table).iterdir()) == before
    assert _pairs(dest, schema) == [(1, "v1"), (2, "v2"), (3, "v3")]
    assert dest.read_marker("j", "t") is None


def test_update_columns_refuses_nulls_in_a_not_null_column(dest: ParquetDestination) -> None:
    schema = TableSchema(TableName("t"), (Column("id", T("int64"), False), Column("v", T("string"), False)), ("id",))
    dest.create_table(schema)
    _load(dest, schema, [{"id": 1, "v": "a"}])
    session = dest.begin_load(schema, "merge", ("id",))
    with pytest.raises(DataError, match=r"t.*'v'"):
        session.update_columns(pa.RecordBatch.from_pydict({"id": [1], "v": [None]}))
    session.abort()
    assert _pairs(dest, schema) == [(1, "a")]


def test_apply_changes_end_to_end(dest: ParquetDestination) -> None:
    from copyjob.apply.changes import apply_changes

    from copyjob.core.changes import UNCHANGED_TOAST, ChangeBatch, ChangeEvent

    schema = _three(dest)
    later = T0 + dt.timedelta(hours=1)
    events = [
        ChangeEvent("c", None, {"id": 4, "v": "d", "at": later}),
        ChangeEvent("u", {"id": 1}, {"id": 1, "v": "a2", "at": UNCHANGED_TOAST}),  # at kept
        ChangeEvent("d", {"id": 2, "v": None, "at": None}, None),
        ChangeEvent("u", {"id": 3}, {"id": 3, "v": "c2", "at": later}),
        ChangeEvent("c", None, {"id": 5, "v": "e", "at": None}),
        ChangeEvent("d", {"id": 5, "v": None, "at": None}, None),
    ]
    marker = StateMarker("j", "t", "r1", {"pos": 42})
    result = apply_changes(dest, schema, ChangeBatch(schema.table, schema, events), method="merge", key=["id"],
                           rename={}, marker=lambda: marker)
    assert (result.upserted, result.deleted) == (3, 1)
    assert sorted(_read(dest, schema.table), key=lambda r: r["id"]) == [
        {"id": 1, "v": "a2", "at": T0}, {"id": 3, "v": "c2", "at": later}, {"id": 4, "v": "d", "at": later}]
    assert dest.read_marker("j", "t") == marker
