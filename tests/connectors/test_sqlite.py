"""SQLite source and destination against real database files under tmp_path: what is SQLite's own (type
mapping, reading values other tools stored, quoting, one file in both roles). The behaviour every destination
shares is tested in test_destination_contract.py."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from copyjob.connectors.sqlite import SqliteDestination, SqliteSource

from copyjob.core.contracts import Bound, RowFilter, StateMarker
from copyjob.core.errors import ConfigurationError, ConnectionFailed, DataError, TableNotFound
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url

UTC = dt.UTC
T = LogicalType


def _all_types(name: str = "all types") -> TableSchema:
    return TableSchema(
        table=TableName(name),
        columns=(
            Column("id", T("int64"), nullable=False),
            Column("i16", T("int16")),
            Column("i32", T("int32")),
            Column("f32", T("float32")),
            Column("f64", T("float64")),
            Column("dec", T("decimal", precision=12, scale=2)),
            Column("wide", T("decimal", precision=30, scale=10)),
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
        "wide": Decimal("12345678901234567890.0123456789"), "free": "3.14159265358979323846264338327950288",
        "s": "héllo 'world'", "vs": "short", "b": True, "d": dt.date(1, 1, 1), "t": dt.time(23, 59, 59, 999999),
        "ts": dt.datetime(2024, 2, 29, 12, 30, 45, 123456), "tz": dt.datetime(2024, 2, 29, 12, 30, 45, 1, tzinfo=UTC),
        "bin": b"\x00\xff\x10", "u": str(uuid.UUID(int=7)), "j": '{"a": [1, 2.5, null]}',
    },
    {
        "id": 2, "i16": 7, "i32": -1, "f32": -0.25, "f64": -1e300, "dec": Decimal("-0.05"),
        "wide": Decimal("-0.0000000001"), "free": "-7", "s": "", "vs": "x", "b": False,
        "d": dt.date(9999, 12, 31), "t": dt.time(0, 0), "ts": dt.datetime(1970, 1, 1),
        "tz": dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), "bin": b"", "u": str(uuid.UUID(int=2**128 - 1)),
        "j": "[]",
    },
    {"id": 3, **{c: None for c in ("i16", "i32", "f32", "f64", "dec", "wide", "free", "s", "vs", "b", "d", "t",
                                   "ts", "tz", "bin", "u", "j")}},
]


def _batch(schema: TableSchema, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema.arrow_schema())


def _url(path: Path) -> Any:
    return parse_url(f"sqlite:///{path}")


def _load(dest: SqliteDestination, schema: TableSchema, rows: list[dict[str, Any]], method: Any = "append",
          key: tuple[str, ...] = (), truncate: bool = False, marker: StateMarker | None = None) -> None:
    session = dest.begin_load(schema, method, key, truncate=truncate)
    session.write(_batch(schema, rows))
    session.commit(marker)


def _read(src: SqliteSource, schema: TableSchema, filters: list[RowFilter] | None = None,
          batch_rows: int = 50_000) -> list[dict[str, Any]]:
    batches = list(src.read(schema, filters or [], batch_rows=batch_rows))
    assert all(b.schema == schema.arrow_schema() for b in batches)
    return pa.Table.from_batches(batches, schema=schema.arrow_schema()).to_pylist()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "db.sqlite"


@pytest.fixture
def dest(db: Path) -> Any:
    d = SqliteDestination(_url(db))
    yield d
    d.close()


def _source(db: Path) -> SqliteSource:
    return SqliteSource(_url(db))


def _types(schema: TableSchema) -> list[tuple[str, str, bool]]:
    return [(c.name, str(c.type), c.nullable) for c in schema.columns]


# ---------------------------------------------------------------- reflection


def test_reflects_declared_types(db: Path) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as con:
        con.execute(
            'CREATE TABLE "Mixed" (a INTEGER NOT NULL, b INT, c BIGINT, d SMALLINT, e REAL, f DOUBLE, g FLOAT, '
            "h NUMERIC(10,3), i DECIMAL(5), j BOOLEAN, k DATE, l TIME, m DATETIME, n TIMESTAMP, o TIMESTAMPTZ, "
            "p TIMESTAMP WITH TIME ZONE, q BLOB, r UUID, s JSON, t TEXT, u VARCHAR(40), v WHATEVER, w, "
            "x NUMERIC, y NVARCHAR(7), PRIMARY KEY (b, a))")
    src = _source(db)
    schema = src.reflect(TableName("Mixed"))
    assert _types(schema) == [
        ("a", "int64", False), ("b", "int64", False), ("c", "int64", True), ("d", "int16", True),
        ("e", "float64", True), ("f", "float64", True), ("g", "float64", True), ("h", "decimal(10,3)", True),
        ("i", "decimal(5,0)", True), ("j", "bool", True), ("k", "date", True), ("l", "time", True),
        ("m", "timestamp", True), ("n", "timestamp", True), ("o", "timestamptz", True), ("p", "timestamptz", True),
        ("q", "binary", True), ("r", "uuid", True), ("s", "json", True), ("t", "string", True),
        ("u", "string(40)", True), ("v", "string", True), ("w", "string", True), ("x", "decimal", True),
        ("y", "string(7)", True),
    ]
    assert schema.primary_key == ("b", "a")
    assert schema.column("h") is not None and schema.column("h").native_type == "NUMERIC(10,3)"  # type: ignore[union-attr]
    src.close()


def test_create_table_then_reflect_gives_the_same_schema(dest: SqliteDestination) -> None:
    schema = _all_types()
    dest.create_table(schema)
    reflected = dest.reflect(schema.table)
    assert reflected is not None
    assert _types(reflected) == _types(schema)
    assert reflected.primary_key == ("id",)
    assert dest.reflect(TableName("nope")) is None


def test_schema_other_than_main_is_refused(dest: SqliteDestination) -> None:
    with pytest.raises(ConfigurationError):
        dest.reflect(TableName("t", schema="other"))
    dest.create_table(TableSchema(TableName("t", schema="main"), (Column("a", T("int64")),)))
    assert dest.reflect(TableName("t")) is not None


# ---------------------------------------------------------------- reading


def test_read_round_trip_of_every_type(dest: SqliteDestination, db: Path) -> None:
    schema = _all_types()
    dest.create_table(schema)
    _load(dest, schema, ROWS)
    src = _source(db)
    assert _read(src, src.reflect(schema.table)) == _read(src, schema)
    got = _read(src, schema, batch_rows=2)
    expected = [dict(r) for r in ROWS]
    expected[0]["free"] = "3.14159265358979323846264338327950288"  # unconstrained decimal: text, every digit
    assert got == expected
    src.close()


def test_reads_values_stored_by_other_tools(db: Path) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (id INTEGER, ts TIMESTAMP, tz TIMESTAMPTZ, d NUMERIC(10,2), b BOOLEAN, "
                    "u UUID, dd DATE, s VARCHAR(5), j JSON, w WHATEVER)")
        con.execute("INSERT INTO t VALUES (1, '2024-01-02T03:04:05', '2024-01-02 03:04:05+02:00', 1.1, 'true', "
                    "?, '2024-01-02 00:00:00', 42, '123', 'x')", (uuid.UUID(int=5).bytes,))
        con.execute("INSERT INTO t VALUES (2, 0, 86400.5, '12.30', 0, 'x', '2024-01-03', 1.5, '[1]', 7)")
    src = _source(db)
    rows = _read(src, src.reflect(TableName("t")))
    assert rows[0] == {"id": 1, "ts": dt.datetime(2024, 1, 2, 3, 4, 5), "tz": dt.datetime(2024, 1, 2, 1, 4, 5,
                       tzinfo=UTC), "d": Decimal("1.10"), "b": True, "u": str(uuid.UUID(int=5)),
                       "dd": dt.date(2024, 1, 2), "s": "42", "j": "123", "w": "x"}
    assert rows[1]["ts"] == dt.datetime(1970, 1, 1)
    assert rows[1]["tz"] == dt.datetime(1970, 1, 2, 0, 0, 0, 500000, tzinfo=UTC)
    assert rows[1]["d"] == Decimal("12.30") and rows[1]["s"] == "1.5" and rows[1]["w"] == "7"
    src.close()


def test_a_value_that_does_not_fit_is_a_data_error(db: Path) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (d DECIMAL_TEXT(5,1))")
        con.execute("INSERT INTO t VALUES ('1.25')")
    src = _source(db)
    with pytest.raises(DataError):
        _read(src, src.reflect(TableName("t")))
    src.close()


def _filtered_ids(src: SqliteSource, schema: TableSchema, *filters: RowFilter) -> list[int]:
    ids = [r["id"] for r in _read(src, schema, list(filters))]
    assert src.count(schema.table, list(filters)) == len(ids)
    return sorted(ids)


def test_filters(dest: SqliteDestination, db: Path) -> None:
    schema = _all_types()
    dest.create_table(schema)
    base = dt.datetime(2024, 5, 1, 10, 0, 0)
    rows = [{"id": i, "ts": base + dt.timedelta(microseconds=i) if i < 5 else None,
             "tz": (base + dt.timedelta(seconds=i)).replace(tzinfo=UTC) if i < 5 else None,
             "dec": Decimal(i) * 3 + Decimal("0.5")} for i in range(7)]
    _load(dest, schema, rows)
    src = _source(db)
    ts_at = base + dt.timedelta(microseconds=2)
    assert _filtered_ids(src, schema, RowFilter("id", lower=Bound(2, False))) == [3, 4, 5, 6]
    assert _filtered_ids(src, schema, RowFilter("id", lower=Bound(2, True), upper=Bound(4, False))) == [2, 3]
    assert _filtered_ids(src, schema, RowFilter("ts", lower=Bound(ts_at, False))) == [3, 4]
    assert _filtered_ids(src, schema, RowFilter("ts", lower=Bound(ts_at, True))) == [2, 3, 4]
    assert _filtered_ids(src, schema, RowFilter("ts", upper=Bound(ts_at, True))) == [0, 1, 2]
    assert _filtered_ids(src, schema, RowFilter("ts", only_nulls=True)) == [5, 6]
    # an aware bound in another zone, and a naive bound (taken as UTC), on a timestamptz column
    tz_at = (base + dt.timedelta(seconds=3)).replace(tzinfo=UTC).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert _filtered_ids(src, schema, RowFilter("tz", lower=Bound(tz_at, True))) == [3, 4]
    assert _filtered_ids(src, schema, RowFilter("tz", upper=Bound(base + dt.timedelta(seconds=1), False))) == [0]
    assert _filtered_ids(src, schema, RowFilter("tz", only_nulls=True), RowFilter("id", upper=Bound(5, True))) == [5]
    assert _filtered_ids(src, schema, RowFilter("dec", lower=Bound(Decimal("9.5"), False))) == [4, 5, 6]
    # filtering on a column that is not read
    assert _filtered_ids(src, schema.select(["id"]), RowFilter("ts", lower=Bound(ts_at, False))) == [3, 4]
    src.close()


def test_max_count_and_key_range(dest: SqliteDestination, db: Path) -> None:
    schema = _all_types()
    dest.create_table(schema)
    src = _source(db)
    assert src.max_value(schema.table, "tz") is None
    assert src.key_range(schema.table, "id") == (None, None)
    assert src.count(schema.table) == 0
    _load(dest, schema, ROWS)
    assert src.max_value(schema.table, "id") == 3
    assert src.max_value(schema.table, "ts") == dt.datetime(2024, 2, 29, 12, 30, 45, 123456)
    assert src.max_value(schema.table, "tz") == dt.datetime(2024, 2, 29, 12, 30, 45, 1, tzinfo=UTC)
    assert src.max_value(schema.table, "wide") == Decimal("12345678901234567890.0123456789")
    assert src.max_value(schema.table, "dec") == Decimal("1234567890.12")
    assert src.key_range(schema.table, "id") == (1, 3)
    assert src.key_range(schema.table, "dec") == (Decimal("-0.05"), Decimal("1234567890.12"))
    assert src.count(schema.table) == 3
    with pytest.raises(ConfigurationError):
        src.max_value(schema.table, "nope")
    src.close()


def test_missing_source_file_fails_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.sqlite"
    with pytest.raises(ConnectionFailed, match=r"missing\.sqlite"):
        _source(path)
    assert not path.exists()


def test_missing_table(dest: SqliteDestination, db: Path) -> None:
    src = _source(db)
    with pytest.raises(TableNotFound):
        src.reflect(TableName("nope"))
    with pytest.raises(TableNotFound):
        list(src.read(_all_types("nope")))
    with pytest.raises(TableNotFound):
        src.count(TableName("nope"))
    src.close()


# ---------------------------------------------------------------- source and destination on one file


def _simple(name: str = "t") -> TableSchema:
    return TableSchema(TableName(name), (Column("id", T("int64"), False), Column("v", T("string")),
                                         Column("at", T("timestamptz"))), primary_key=("id",))


def test_source_quotes_identifiers_with_spaces_quotes_and_upper_case(dest: SqliteDestination, db: Path) -> None:
    schema = TableSchema(TableName('My "odd" Table'), (Column("Key Col", T("int64"), False),
                                                       Column('say "hi"', T("string")), Column("UPPER", T("bool"))),
                         primary_key=("Key Col",))
    dest.create_table(schema)
    _load(dest, schema, [{"Key Col": 1, 'say "hi"': "x", "UPPER": True}])
    src = _source(db)
    reflected = src.reflect(schema.table)
    assert _types(reflected) == _types(schema) and reflected.primary_key == ("Key Col",)
    assert _read(src, schema, [RowFilter("Key Col", lower=Bound(0, False))]) == [
        {"Key Col": 1, 'say "hi"': "x", "UPPER": True}]
    assert src.max_value(schema.table, 'say "hi"') == "x"
    src.close()


def test_copy_between_tables_of_one_file(dest: SqliteDestination, db: Path) -> None:
    a, b = _simple("a"), _simple("b")
    dest.create_table(a)
    dest.create_table(b)
    _load(dest, a, [{"id": i} for i in range(10)])
    src = _source(db)
    session = dest.begin_load(b, "append", ())
    for batch in src.read(a, batch_rows=3):  # the source reads while the load holds the write lock
        session.write(batch)
        assert src.count(a.table) == 10
    session.commit(StateMarker("job", "b", "r", {}))
    assert src.count(b.table) == 10
    other = src.clone()
    assert sorted(r["id"] for r in _read(other, b)) == list(range(10))
    other.close()
    src.close()


def test_nan_and_infinity_are_kept_and_negative_zero_loses_its_sign(dest: SqliteDestination, db: Path) -> None:
    """SQLite stores a NaN REAL as NULL: copyjob stores the TEXT 'NaN' and reads it back as NaN. -0.0 becomes
    0.0 (REAL affinity stores an integral real as an integer): documented in docs/types-sqlite.md."""
    import math

    schema = TableSchema(TableName("floats"), (Column("id", T("int64"), nullable=False), Column("f32", T("float32")),
                                               Column("f64", T("float64"))), ("id",))
    dest.create_table(schema)
    values = [math.nan, math.inf, -math.inf, -0.0, None]
    _load(dest, schema, [{"id": i, "f32": v, "f64": v} for i, v in enumerate(values)])
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT typeof(f64), f64 FROM floats WHERE id = 0").fetchone() == ("text", "NaN")
    src = _source(db)
    got = _read(src, schema)
    src.close()
    for column in ("f32", "f64"):
        found = [r[column] for r in got]
        assert math.isnan(found[0]) and found[1:3] == [math.inf, -math.inf] and found[4] is None
        assert found[3] == 0.0 and math.copysign(1.0, found[3]) == 1.0


def test_dates_and_times_python_cannot_hold_are_stored_as_postgresql_spells_them(dest: SqliteDestination,
                                                                                  db: Path) -> None:
    from copyjob.core import temporal

    schema = TableSchema(TableName("odd"), (Column("id", T("int64"), nullable=False), Column("d", T("date")),
                                            Column("t", T("time")), Column("tz", T("timestamptz"))), ("id",))
    dest.create_table(schema)
    session = dest.begin_load(schema, "append", ())
    session.write(pa.RecordBatch.from_arrays([
        pa.array([1, 2]), pa.array([temporal.DATE_INFINITY, -735_160], pa.date32()),
        pa.array([temporal.TIME_24, 0], pa.time64("us")),
        pa.array([-temporal.TIMESTAMP_INFINITY, 0], pa.timestamp("us", tz="UTC"))], schema=schema.arrow_schema()))
    session.commit(None)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT d, t, tz FROM odd ORDER BY id").fetchall() == [
            ("infinity", "24:00:00", "-infinity"), ("0044-03-15 BC", "00:00:00.000000",
                                                    "1970-01-01 00:00:00.000000+00:00")]
