"""DuckDB source and destination against real database files under tmp_path."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from copyjob.connectors.duckdb import DuckdbDestination, DuckdbSource

from copyjob.core.contracts import Bound, RowFilter, StateMarker
from copyjob.core.errors import ConfigurationError, ConnectionFailed, DataError, TableNotFound
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
            Column("wide", T("decimal", precision=38, scale=10)),
            Column("s", T("string")),
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
        "wide": Decimal("1234567890123456789012345678.0123456789"), "s": "héllo 'world'", "b": True,
        "d": dt.date(1, 1, 1), "t": dt.time(23, 59, 59, 999999), "ts": dt.datetime(2024, 2, 29, 12, 30, 45, 123456),
        "tz": dt.datetime(2024, 2, 29, 12, 30, 45, 1, tzinfo=UTC), "bin": b"\x00\xff\x10",
        "u": str(uuid.UUID(int=7)), "j": '{"a":[1,2.5,null]}',
    },
    {
        "id": 2, "i16": 7, "i32": -1, "f32": -0.25, "f64": -1e300, "dec": Decimal("-0.05"),
        "wide": Decimal("-0.0000000001"), "s": "", "b": False, "d": dt.date(9999, 12, 31), "t": dt.time(0, 0),
        "ts": dt.datetime(1970, 1, 1), "tz": dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), "bin": b"",
        "u": str(uuid.UUID(int=2**128 - 1)), "j": "[]",
    },
    {"id": 3, **{c: None for c in ("i16", "i32", "f32", "f64", "dec", "wide", "s", "b", "d", "t", "ts", "tz",
                                   "bin", "u", "j")}},
]


def _batch(schema: TableSchema, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema.arrow_schema())


def _url(path: Path) -> Any:
    return parse_url(f"duckdb:///{path}")


def _load(dest: DuckdbDestination, schema: TableSchema, rows: list[dict[str, Any]], method: Any = "append",
          key: tuple[str, ...] = (), truncate: bool = False, marker: StateMarker | None = None) -> None:
    session = dest.begin_load(schema, method, key, truncate=truncate)
    session.write(_batch(schema, rows))
    session.commit(marker)


def _read(src: DuckdbSource, schema: TableSchema, filters: list[RowFilter] | None = None,
          batch_rows: int = 50_000) -> list[dict[str, Any]]:
    batches = list(src.read(schema, filters or [], batch_rows=batch_rows))
    assert all(b.schema == schema.arrow_schema() for b in batches)
    return pa.Table.from_batches(batches, schema=schema.arrow_schema()).to_pylist()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "db.duckdb"


@pytest.fixture
def dest(db: Path) -> Iterator[DuckdbDestination]:
    d = DuckdbDestination(_url(db))
    yield d
    d.close()


@pytest.fixture
def src(dest: DuckdbDestination, db: Path) -> Iterator[DuckdbSource]:
    """A source on the destination's file, open at the same time (one process, one shared database)."""
    s = DuckdbSource(_url(db))
    yield s
    s.close()


def _types(schema: TableSchema) -> list[tuple[str, str, bool]]:
    return [(c.name, str(c.type), c.nullable) for c in schema.columns]


def _sql(db: Path, *statements: str) -> None:
    con = duckdb.connect(str(db))
    for statement in statements:
        con.execute(statement)
    con.close()


# ---------------------------------------------------------------- reflection


def test_reflects_native_types(db: Path) -> None:
    db.parent.mkdir()
    _sql(db, "CREATE TYPE mood AS ENUM ('ok', 'sad')",
         'CREATE TABLE "Mixed" (a BIGINT NOT NULL, b INTEGER, c SMALLINT, d TINYINT, e HUGEINT, f REAL, '
         "g DOUBLE, h DECIMAL(10,3), i DECIMAL(38,0), j VARCHAR(40), k BOOLEAN, l DATE, m TIME, n TIMESTAMP, "
         "o TIMESTAMP WITH TIME ZONE, p BLOB, q UUID, r JSON, s UBIGINT, t UTINYINT, u TIMESTAMP_NS, "
         "v INTEGER[], w STRUCT(x INTEGER), x mood, y DECIMAL, PRIMARY KEY (b, a))")
    src = DuckdbSource(_url(db))
    schema = src.reflect(TableName("Mixed"))
    assert _types(schema) == [
        ("a", "int64", False), ("b", "int32", False), ("c", "int16", True), ("d", "int16", True),
        ("e", "decimal(38,0)", True), ("f", "float32", True), ("g", "float64", True), ("h", "decimal(10,3)", True),
        ("i", "decimal(38,0)", True), ("j", "string", True), ("k", "bool", True), ("l", "date", True),
        ("m", "time", True), ("n", "timestamp", True), ("o", "timestamptz", True), ("p", "binary", True),
        ("q", "uuid", True), ("r", "json", True), ("s", "decimal(20,0)", True), ("t", "int16", True),
        ("u", "timestamp", True), ("v", "string", True), ("w", "string", True), ("x", "string", True),
        ("y", "decimal(18,3)", True),
    ]
    assert schema.primary_key == ("b", "a")
    assert src.reflect(TableName("mixed", "main")).column_names == schema.column_names  # case-insensitive
    src.close()


def test_reads_native_types_as_their_logical_types(db: Path) -> None:
    db.parent.mkdir()
    _sql(db, "CREATE TABLE n (e HUGEINT, s UBIGINT, u TIMESTAMP_NS, v INTEGER[], t UTINYINT, x TIMESTAMP_S)",
         "INSERT INTO n VALUES (170141183460469231731687303715884105727 // 10, 18446744073709551615, "
         "'2024-01-01 00:00:00.123456789', [1, 2], 255, '2024-01-01 00:00:01')")
    src = DuckdbSource(_url(db))
    # TIMESTAMP_NS is rounded to the microsecond
    assert _read(src, src.reflect(TableName("n"))) == [{
        "e": Decimal("17014118346046923173168730371588410572"), "s": Decimal(18446744073709551615),
        "u": dt.datetime(2024, 1, 1, 0, 0, 0, 123457), "v": "[1, 2]", "t": 255,
        "x": dt.datetime(2024, 1, 1, 0, 0, 1)}]
    src.close()


def test_create_table_then_reflect_gives_the_same_schema(dest: DuckdbDestination) -> None:
    schema = _all_types(schema="My Schema")
    dest.create_table(schema)
    reflected = dest.reflect(schema.table)
    assert reflected is not None
    assert _types(reflected) == _types(schema)
    assert reflected.primary_key == ("id",)
    assert dest.reflect(TableName("nope")) is None


def test_documented_type_changes(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = TableSchema(TableName("lossy"), (Column("free", T("decimal")), Column("huge", T("decimal", 50, 5)),
                                              Column("short", T("string", length=5))))
    dest.create_table(schema)
    reflected = dest.reflect(schema.table)
    assert reflected is not None
    # unconstrained → DECIMAL(38,10); wider than 38 digits → VARCHAR; DuckDB keeps no VARCHAR length
    assert _types(reflected) == [("free", "decimal(38,10)", True), ("huge", "string", True),
                                 ("short", "string", True)]
    huge = Decimal("123456789012345678901234567890123456789012345.12345")
    _load(dest, schema, [{"free": "3.14159265358979", "huge": huge, "short": "abc"}])
    assert _read(src, schema) == [{"free": "3.1415926536", "huge": huge, "short": "abc"}]


def test_create_without_primary_key(dest: DuckdbDestination) -> None:
    schema = _all_types()
    dest.create_table(schema, primary_key=False)
    assert dest.reflect(schema.table).primary_key == ()  # type: ignore[union-attr]


# ---------------------------------------------------------------- reading


def test_read_round_trip_of_every_type(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _all_types()
    dest.create_table(schema)
    _load(dest, schema, ROWS)
    assert _read(src, schema, batch_rows=2) == ROWS
    assert _read(src, src.reflect(schema.table)) == ROWS


def _filtered_ids(src: DuckdbSource, schema: TableSchema, *filters: RowFilter) -> list[int]:
    ids = [r["id"] for r in _read(src, schema, list(filters))]
    assert src.count(schema.table, list(filters)) == len(ids)
    return sorted(ids)


def test_filters(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _all_types()
    dest.create_table(schema)
    base = dt.datetime(2024, 5, 1, 10, 0, 0)
    rows = [{"id": i, "ts": base + dt.timedelta(microseconds=i) if i < 5 else None,
             "tz": (base + dt.timedelta(seconds=i)).replace(tzinfo=UTC) if i < 5 else None,
             "dec": Decimal(i) * 3 + Decimal("0.5"), "u": str(uuid.UUID(int=i))} for i in range(7)]
    _load(dest, schema, rows)
    ts_at = base + dt.timedelta(microseconds=2)
    assert _filtered_ids(src, schema, RowFilter("id", lower=Bound(2, False))) == [3, 4, 5, 6]
    assert _filtered_ids(src, schema, RowFilter("id", lower=Bound(2, True), upper=Bound(4, False))) == [2, 3]
    assert _filtered_ids(src, schema, RowFilter("ts", lower=Bound(ts_at, False))) == [3, 4]
    assert _filtered_ids(src, schema, RowFilter("ts", lower=Bound(ts_at, True))) == [2, 3, 4]
    assert _filtered_ids(src, schema, RowFilter("ts", upper=Bound(ts_at, True))) == [0, 1, 2]
    assert _filtered_ids(src, schema, RowFilter("ts", only_nulls=True)) == [5, 6]
    tz_at = (base + dt.timedelta(seconds=3)).replace(tzinfo=UTC).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert _filtered_ids(src, schema, RowFilter("tz", lower=Bound(tz_at, True))) == [3, 4]
    assert _filtered_ids(src, schema, RowFilter("tz", upper=Bound(base + dt.timedelta(seconds=1), False))) == [0]
    assert _filtered_ids(src, schema, RowFilter("tz", only_nulls=True), RowFilter("id", upper=Bound(5, True))) == [5]
    assert _filtered_ids(src, schema, RowFilter("dec", lower=Bound(Decimal("9.5"), False))) == [4, 5, 6]
    assert _filtered_ids(src, schema, RowFilter("u", upper=Bound(uuid.UUID(int=1), True))) == [0, 1]


def test_max_count_and_key_range(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _all_types()
    dest.create_table(schema)
    assert src.max_value(schema.table, "tz") is None
    assert src.key_range(schema.table, "id") == (None, None)
    assert src.count(schema.table) == 0
    _load(dest, schema, ROWS)
    assert src.max_value(schema.table, "id") == 3
    assert src.max_value(schema.table, "ts") == dt.datetime(2024, 2, 29, 12, 30, 45, 123456)
    assert src.max_value(schema.table, "tz") == dt.datetime(2024, 2, 29, 12, 30, 45, 1, tzinfo=UTC)
    assert src.max_value(schema.table, "wide") == Decimal("1234567890123456789012345678.0123456789")
    assert src.max_value(schema.table, "u") == str(uuid.UUID(int=2**128 - 1))
    assert src.key_range(schema.table, "id") == (1, 3)
    assert src.count(schema.table) == 3
    with pytest.raises(ConfigurationError):
        src.max_value(schema.table, "nope")


def test_missing_source_file_fails_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.duckdb"
    with pytest.raises(ConnectionFailed, match=r"missing\.duckdb"):
        DuckdbSource(_url(path))
    assert not path.exists()


def test_destination_creates_the_file_and_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "new.duckdb"
    DuckdbDestination(_url(path)).close()
    assert path.is_file()


def test_missing_table(src: DuckdbSource) -> None:
    with pytest.raises(TableNotFound):
        src.reflect(TableName("nope"))
    with pytest.raises(TableNotFound):
        list(src.read(_all_types("nope")))
    with pytest.raises(TableNotFound):
        src.count(TableName("nope"))


def test_source_and_destination_on_one_file_interleave(dest: DuckdbDestination, src: DuckdbSource) -> None:
    a, b = _simple("a"), _simple("b")
    dest.create_table(a)
    dest.create_table(b)
    _load(dest, a, [{"id": i} for i in range(10)])
    session = dest.begin_load(b, "append", ())
    for batch in src.read(a, batch_rows=3):  # copy a → b while a is being streamed
        session.write(batch.select(["id", "v", "at"]))
        assert src.count(a.table) == 10
    session.commit(None)
    other = src.clone()
    assert sorted(r["id"] for r in _read(other, b)) == list(range(10))
    other.close()
    dest.close()  # the source keeps working after the destination let go of the shared database
    assert src.count(b.table) == 10


# ---------------------------------------------------------------- writing


def _simple(name: str = "t") -> TableSchema:
    return TableSchema(TableName(name), (Column("id", T("int64"), False), Column("v", T("string")),
                                         Column("at", T("timestamptz"))), primary_key=("id",))


def _rows_of(src: DuckdbSource, schema: TableSchema) -> list[dict[str, Any]]:
    return sorted(_read(src, schema), key=lambda r: r["id"])


def test_append_overwrite_truncate(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _simple()
    dest.create_table(schema)
    _load(dest, schema, [{"id": 1, "v": "a"}])
    _load(dest, schema, [{"id": 2, "v": "b"}])
    assert [r["id"] for r in _rows_of(src, schema)] == [1, 2]
    _load(dest, schema, [{"id": 3, "v": "c"}, {"id": 1, "v": "again"}], method="overwrite")
    assert [r["id"] for r in _rows_of(src, schema)] == [1, 3]
    _load(dest, schema, [{"id": 4, "v": "d"}], truncate=True)
    assert [r["id"] for r in _rows_of(src, schema)] == [4]


def test_merge_last_row_of_a_key_wins(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _simple()
    dest.create_table(schema)
    _load(dest, schema, [{"id": i, "v": f"old{i}"} for i in (1, 2, 3)])
    session = dest.begin_load(schema, "merge", ("id",))
    session.write(_batch(schema, [{"id": 2, "v": "first"}, {"id": 4, "v": "new"}]))
    session.write(_batch(schema, [{"id": 2, "v": "last"}]))
    session.commit(None)
    assert [(r["id"], r["v"]) for r in _rows_of(src, schema)] == [(1, "old1"), (2, "last"), (3, "old3"), (4, "new")]


def test_merge_on_a_table_without_key_and_composite_key(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = TableSchema(TableName("pairs"), (Column("a", T("int32")), Column("b", T("string")),
                                              Column("v", T("int64"))))
    dest.create_table(schema)
    _load(dest, schema, [{"a": 1, "b": "x", "v": 1}, {"a": 1, "b": "y", "v": 2}])
    _load(dest, schema, [{"a": 1, "b": "y", "v": 20}, {"a": 2, "b": "y", "v": 3}, {"a": 1, "b": "y", "v": 21}],
          method="merge", key=("a", "b"))
    assert sorted((r["a"], r["b"], r["v"]) for r in _read(src, schema)) == [(1, "x", 1), (1, "y", 21), (2, "y", 3)]


def test_marker_is_committed_with_the_data(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _simple()
    dest.create_table(schema)
    assert dest.read_marker("job", "t") is None
    marker = StateMarker("job", "t", "run-1", {"watermark": "2024-01-01T00:00:00+00:00", "n": 1})
    _load(dest, schema, [{"id": 1}], marker=marker)
    assert dest.read_marker("job", "t") == marker
    _load(dest, schema, [{"id": 2}], marker=StateMarker("job", "t", "run-2", {"n": 2}))
    assert dest.read_marker("job", "t") == StateMarker("job", "t", "run-2", {"n": 2})
    assert dest.read_marker("other", "t") is None
    assert [r["id"] for r in _rows_of(src, schema)] == [1, 2]


def test_abort_leaves_table_and_marker_as_before(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _simple()
    dest.create_table(schema)
    marker = StateMarker("job", "t", "run-1", {"n": 1})
    _load(dest, schema, [{"id": 1, "v": "keep"}], marker=marker)
    for method, first in (("append", 2), ("overwrite", 1), ("merge", 1)):
        session = dest.begin_load(schema, method, ("id",))  # type: ignore[arg-type]
        session.write(_batch(schema, [{"id": first, "v": "changed"}, {"id": 3, "v": "new"}]))
        session.abort()
    assert [(r["id"], r["v"]) for r in _rows_of(src, schema)] == [(1, "keep")]
    assert dest.read_marker("job", "t") == marker


def test_a_refused_row_is_a_data_error(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _simple()
    dest.create_table(schema)
    _load(dest, schema, [{"id": 1}])
    session = dest.begin_load(schema, "append", ())
    session.write(_batch(schema, [{"id": 2}]))
    with pytest.raises(DataError):
        session.write(_batch(schema, [{"id": 1}]))
    session.abort()
    assert [r["id"] for r in _rows_of(src, schema)] == [1]


def test_deferred_primary_key_is_added_at_commit(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _simple()
    dest.create_table(schema, primary_key=False)
    session = dest.begin_load(schema, "append", (), deferred_key=("id",))
    session.write(_batch(schema, [{"id": 2, "v": "b"}, {"id": 1, "v": "a"}]))
    session.commit(StateMarker("job", "t", "r", {}))
    reflected = dest.reflect(schema.table)
    assert reflected is not None and reflected.primary_key == ("id",)
    assert [r["id"] for r in _rows_of(src, schema)] == [1, 2]


def test_add_columns_then_write_with_them(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _simple()
    dest.create_table(schema)
    _load(dest, schema, [{"id": 1, "v": "a"}])
    extra = (Column("amount", T("decimal", precision=10, scale=2), nullable=False), Column("day", T("date")))
    dest.add_columns(schema.table, extra)
    wider = TableSchema(schema.table, schema.columns + extra, schema.primary_key)
    reflected = dest.reflect(schema.table)
    assert reflected is not None
    assert _types(reflected)[-2:] == [("amount", "decimal(10,2)", True), ("day", "date", True)]
    _load(dest, wider, [{"id": 2, "v": "b", "amount": Decimal("9.99"), "day": dt.date(2024, 1, 1)}])
    rows = _rows_of(src, reflected)
    assert rows[0]["amount"] is None and rows[1]["amount"] == Decimal("9.99")


def test_identifiers_with_spaces_quotes_and_upper_case(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = TableSchema(TableName('My "odd" Table', 'Sch "x"'),
                         (Column("Key Col", T("int64"), False), Column('say "hi"', T("string")),
                          Column("UPPER", T("bool"))), primary_key=("Key Col",))
    dest.create_table(schema)
    _load(dest, schema, [{"Key Col": 1, 'say "hi"': "x", "UPPER": True}], method="merge", key=("Key Col",))
    reflected = src.reflect(schema.table)
    assert _types(reflected) == _types(schema) and reflected.primary_key == ("Key Col",)
    assert _read(src, schema, [RowFilter("Key Col", lower=Bound(0, False))]) == [
        {"Key Col": 1, 'say "hi"': "x", "UPPER": True}]
    assert src.max_value(schema.table, 'say "hi"') == "x"


# ---------------------------------------------------------------- deletes and column updates by key

T0 = dt.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _events() -> TableSchema:
    return TableSchema(TableName("ev"), (Column("code", T("string"), False), Column("at", T("timestamptz"), False),
                                         Column("u", T("uuid")), Column("v", T("int32"))), primary_key=("code", "at"))


def _part(schema: TableSchema, names: list[str], rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([dict(zip(names, r, strict=True)) for r in rows],
                                      schema=schema.select(names).arrow_schema())


def _three(dest: DuckdbDestination, primary_key: bool = True) -> TableSchema:
    schema = _simple()
    dest.create_table(schema, primary_key=primary_key)
    _load(dest, schema, [{"id": i, "v": f"v{i}", "at": T0} for i in (1, 2, 3)])
    return schema


def _pairs(src: DuckdbSource, schema: TableSchema) -> list[tuple[int, str | None]]:
    return [(r["id"], r["v"]) for r in _rows_of(src, schema)]


def test_delete_keys_by_single_key(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _three(dest)
    session = dest.begin_load(schema, "merge", ("id",))
    assert session.delete_keys(_part(schema, ["id"], [(2,), (9,), (None,)])) == 1  # missing and NULL: no match
    assert session.delete_keys(_part(schema, ["id"], [(7,), (8,)])) == 0
    assert session.delete_keys(_part(schema, ["id"], [])) == 0
    session.commit(StateMarker("j", "t", "r", {}))
    assert _pairs(src, schema) == [(1, "v1"), (3, "v3")]


def test_delete_keys_by_composite_text_and_timestamp_key(dest: DuckdbDestination, src: DuckdbSource) -> None:
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
    assert sorted((r["code"], r["v"]) for r in _read(src, schema)) == [("X", 0), ("X", 1), ("it's", 0), ("x", 1)]

    uu = TableSchema(TableName("byu"), (Column("u", T("uuid")), Column("v", T("int32"))))  # no primary key
    dest.create_table(uu)
    u1, u2 = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    _load(dest, uu, [{"u": u1, "v": 1}, {"u": u2, "v": 2}, {"u": u1, "v": 3}])
    session = dest.begin_load(uu, "append", ("u",))
    assert session.delete_keys(_part(uu, ["u"], [(u1,)])) == 2
    session.commit(None)
    assert [r["v"] for r in _read(src, uu)] == [2]


def test_delete_keys_needs_a_key(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _three(dest, primary_key=False)
    session = dest.begin_load(schema, "append", ())
    with pytest.raises(ConfigurationError, match="needs a key"):
        session.delete_keys(_part(schema, ["id"], [(1,)]))
    session.abort()
    session = dest.begin_load(schema, "append", ("id",))
    with pytest.raises(ConfigurationError, match="key columns"):
        session.delete_keys(_part(schema, ["id", "v"], [(1, "v1")]))
    session.abort()
    assert len(_rows_of(src, schema)) == 3


def test_delete_and_write_in_one_merge_session(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _three(dest)
    session = dest.begin_load(schema, "merge", ("id",))
    session.write(_batch(schema, [{"id": 3, "v": "staged"}]))
    assert session.delete_keys(_part(schema, ["id"], [(1,), (3,)])) == 2  # 3 staged before: deleted too
    session.write(_batch(schema, [{"id": 4, "v": "v4"}, {"id": 1, "v": "again"}]))  # after its delete: wins
    session.commit(None)
    assert _pairs(src, schema) == [(1, "again"), (2, "v2"), (4, "v4")]


def test_update_columns_keeps_the_other_columns(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _three(dest)
    session = dest.begin_load(schema, "merge", ("id",))
    session.write(_batch(schema, [{"id": 5, "v": "v5", "at": T0}]))
    updated = session.update_columns(_part(schema, ["id", "v"], [(1, "a1"), (9, "nobody"), (2, "b1"), (2, "b2"),
                                                                 (5, "e1")]))
    assert updated == 2  # 9 is not in the table; 5 is only staged (counted by write); last row of 2 wins
    assert session.update_columns(_part(schema, ["id"], [(3,)])) == 1  # nothing to set: the rows matched
    session.commit(None)
    rows = _rows_of(src, schema)
    assert [(r["id"], r["v"]) for r in rows] == [(1, "a1"), (2, "b2"), (3, "v3"), (5, "e1")]
    assert {r["at"] for r in rows} == {T0}
    later = T0 + dt.timedelta(days=1)
    session = dest.begin_load(schema, "append", ())
    assert session.update_columns(_part(schema, ["at", "id"], [(later, 3)])) == 1
    session.commit(None)
    assert _rows_of(src, schema)[2] == {"id": 3, "v": "v3", "at": later}


def test_abort_rolls_back_deletes_and_updates(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = _three(dest)
    for method in ("merge", "append", "overwrite"):
        session = dest.begin_load(schema, method, ("id",))
        session.delete_keys(_part(schema, ["id"], [(1,)]))
        session.update_columns(_part(schema, ["id", "v"], [(2, "zzz")]))
        session.abort()
    assert _pairs(src, schema) == [(1, "v1"), (2, "v2"), (3, "v3")]
    assert dest.read_marker("j", "t") is None


def test_update_columns_refuses_a_bad_value(dest: DuckdbDestination, src: DuckdbSource) -> None:
    schema = TableSchema(TableName("t"), (Column("id", T("int64"), False), Column("v", T("string"), False)), ("id",))
    dest.create_table(schema)
    _load(dest, schema, [{"id": 1, "v": "a"}])
    session = dest.begin_load(schema, "merge", ("id",))
    with pytest.raises(DataError, match="t"):
        session.update_columns(pa.RecordBatch.from_pydict({"id": [1], "v": [None]}))
    session.abort()
    assert _pairs(src, schema) == [(1, "a")]


def test_apply_changes_end_to_end(dest: DuckdbDestination, src: DuckdbSource) -> None:
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
    assert _rows_of(src, schema) == [{"id": 1, "v": "a2", "at": T0}, {"id": 3, "v": "c2", "at": later},
                                     {"id": 4, "v": "d", "at": later}]
    assert dest.read_marker("j", "t") == marker
