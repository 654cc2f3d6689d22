"""DuckDB source and destination against real database files under tmp_path: what is DuckDB's own (native
types, documented type changes, one shared database for both roles in one process, named schemas). The
behaviour every destination shares is tested in test_destination_contract.py."""

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
from copyjob.core.errors import ConfigurationError, ConnectionFailed, TableNotFound
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


def _simple(name: str = "t") -> TableSchema:
    return TableSchema(TableName(name), (Column("id", T("int64"), False), Column("v", T("string")),
                                         Column("at", T("timestamptz"))), primary_key=("id",))


def test_odd_identifiers_in_a_named_schema(dest: DuckdbDestination, src: DuckdbSource) -> None:
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
