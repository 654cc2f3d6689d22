"""The PostgreSQL connector against a real PostgreSQL 15 (see tests/services/postgres.py): what is
PostgreSQL's own (type mapping, binary COPY, error translation, psycopg placeholders in names). The behaviour
every destination shares is tested in test_destination_contract.py."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from copyjob.connectors.postgres import PostgresDestination, PostgresSource

from copyjob.core.contracts import Bound, RowFilter, StateMarker
from copyjob.core.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DataError,
    TableNotFound,
)
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url
from tests.services.postgres import PostgresServer

UTC = dt.UTC

ALL_TYPES_DDL = """
CREATE TABLE all_types (
    id bigint NOT NULL, k2 smallint NOT NULL,
    c_int2 smallint, c_int4 integer, c_int8 bigint, c_float4 real, c_float8 double precision,
    c_num numeric(12,2), c_num_free numeric, c_text text, c_varchar varchar(20), c_char char(5),
    c_bool boolean, c_date date, c_time time, c_ts timestamp, c_tstz timestamptz, c_bytea bytea,
    c_uuid uuid, c_json json, c_jsonb jsonb, c_other inet,
    PRIMARY KEY (id, k2)
);
INSERT INTO all_types VALUES
  (1, 7, -32768, 2147483647, 9223372036854775807, 1.5, 3.141592653589793, 1234567890.12,
   123456789012345678901234567890.000000001, 'héllo', 'var', 'ab', true, '2024-02-29', '23:59:59.999999',
   '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+02', '\\x00ff',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": [1, 2]}', '{"a": 1}', '192.168.0.1/32'),
  (2, 7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL);
"""

# name -> (logical type, nullable, native type as format_type prints it)
ALL_TYPES_SCHEMA: dict[str, tuple[LogicalType, bool, str]] = {
    "id": (LogicalType("int64"), False, "bigint"),
    "k2": (LogicalType("int16"), False, "smallint"),
    "c_int2": (LogicalType("int16"), True, "smallint"),
    "c_int4": (LogicalType("int32"), True, "integer"),
    "c_int8": (LogicalType("int64"), True, "bigint"),
    "c_float4": (LogicalType("float32"), True, "real"),
    "c_float8": (LogicalType("float64"), True, "double precision"),
    "c_num": (LogicalType("decimal", precision=12, scale=2), True, "numeric(12,2)"),
    "c_num_free": (LogicalType("decimal"), True, "numeric"),
    "c_text": (LogicalType("string"), True, "text"),
    "c_varchar": (LogicalType("string", length=20), True, "character varying(20)"),
    "c_char": (LogicalType("string", length=5), True, "character(5)"),
    "c_bool": (LogicalType("bool"), True, "boolean"),
    "c_date": (LogicalType("date"), True, "date"),
    "c_time": (LogicalType("time"), True, "time without time zone"),
    "c_ts": (LogicalType("timestamp"), True, "timestamp without time zone"),
    "c_tstz": (LogicalType("timestamptz"), True, "timestamp with time zone"),
    "c_bytea": (LogicalType("binary"), True, "bytea"),
    "c_uuid": (LogicalType("uuid"), True, "uuid"),
    "c_json": (LogicalType("json"), True, "json"),
    "c_jsonb": (LogicalType("json"), True, "jsonb"),
    "c_other": (LogicalType("string"), True, "inet"),
}

ROW1: dict[str, Any] = {
    "id": 1, "k2": 7, "c_int2": -32768, "c_int4": 2147483647, "c_int8": 9223372036854775807,
    "c_float4": 1.5, "c_float8": 3.141592653589793, "c_num": decimal.Decimal("1234567890.12"),
    "c_num_free": "123456789012345678901234567890.000000001", "c_text": "héllo", "c_varchar": "var",
    "c_char": "ab   ", "c_bool": True, "c_date": dt.date(2024, 2, 29), "c_time": dt.time(23, 59, 59, 999999),
    "c_ts": dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
    "c_tstz": dt.datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=UTC), "c_bytea": b"\x00\xff",
    "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "c_json": '{"b": [1, 2]}', "c_jsonb": '{"a": 1}',
    "c_other": "192.168.0.1",  # inet's output text (its ::text adds /32), as logical replication sends it
}
ROW2: dict[str, Any] = {name: None for name in ROW1} | {"id": 2, "k2": 7}

SIMPLE = TableSchema(
    table=TableName("items"),
    columns=(Column("id", LogicalType("int64"), nullable=False), Column("name", LogicalType("string"))),
    primary_key=("id",),
)


@pytest.fixture
def source(pg_url: str) -> Iterator[PostgresSource]:
    src = PostgresSource(parse_url(pg_url))
    yield src
    src.close()


@pytest.fixture
def dest(pg_url: str) -> Iterator[PostgresDestination]:
    d = PostgresDestination(parse_url(pg_url))
    yield d
    d.close()


def db_of(url: str) -> str:
    return parse_url(url).database or "postgres"


def read_all(source: PostgresSource, schema: TableSchema, filters: list[RowFilter] | None = None,
             batch_rows: int = 50_000) -> list[dict[str, Any]]:
    batches = list(source.read(schema, filters or [], batch_rows=batch_rows))
    return pa.Table.from_batches(batches, schema=schema.arrow_schema()).to_pylist()


def simple_batch(rows: list[tuple[int, str | None]]) -> pa.RecordBatch:
    ids, names = zip(*rows, strict=True) if rows else ((), ())
    return pa.RecordBatch.from_arrays([pa.array(ids, pa.int64()), pa.array(names, pa.string())],
                                      schema=SIMPLE.arrow_schema())


def table_rows(server: PostgresServer, url: str, table: str = "items") -> list[str]:
    out = server.psql(db_of(url), f"SELECT * FROM {table} ORDER BY 1")
    return out.splitlines() if out else []


def make_items(server: PostgresServer, url: str, rows: str = "(1,'a'),(2,'b'),(3,'c')") -> None:
    server.psql(db_of(url), f"CREATE TABLE items (id bigint PRIMARY KEY, name text); INSERT INTO items VALUES {rows}")


# ---------------------------------------------------------------- reflection and reading


def test_reflect_every_type(postgres_server: PostgresServer, pg_url: str, source: PostgresSource) -> None:
    postgres_server.psql(db_of(pg_url), ALL_TYPES_DDL)
    schema = source.reflect(TableName("all_types"))
    assert schema.table == TableName("all_types", "public")
    assert schema.primary_key == ("id", "k2")
    got = {c.name: (c.type, c.nullable, c.native_type) for c in schema.columns}
    assert got == ALL_TYPES_SCHEMA
    assert list(got) == list(ALL_TYPES_SCHEMA)  # column order kept


def test_reflect_missing_table(source: PostgresSource) -> None:
    with pytest.raises(TableNotFound, match="nope"):
        source.reflect(TableName("nope"))


def test_read_every_type_with_nulls(postgres_server: PostgresServer, pg_url: str, source: PostgresSource) -> None:
    postgres_server.psql(db_of(pg_url), ALL_TYPES_DDL)
    schema = source.reflect(TableName("all_types"))
    batches = list(source.read(schema, batch_rows=1))
    assert [b.num_rows for b in batches] == [1, 1]
    assert all(b.schema == schema.arrow_schema() for b in batches)
    rows = sorted(pa.Table.from_batches(batches).to_pylist(), key=lambda r: r["id"])
    assert rows == [ROW1, ROW2]
    assert rows[0]["c_tstz"].utcoffset() == dt.timedelta(0)


def test_read_missing_table(source: PostgresSource) -> None:
    ghost = TableSchema(TableName("ghost"), (Column("id", LogicalType("int64"), native_type="bigint"),))
    with pytest.raises(TableNotFound, match="ghost"):
        list(source.read(ghost))
    with pytest.raises(TableNotFound, match="ghost"):
        source.count(ghost.table)


def test_filters_max_count_key_range(postgres_server: PostgresServer, pg_url: str,
                                     source: PostgresSource) -> None:
    postgres_server.psql(db_of(pg_url), """
        CREATE TABLE ev (id int, at timestamptz, "we%s {x}" text);
        INSERT INTO ev SELECT i, '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 hour', 'v' || i
        FROM generate_series(1, 10) i;
        INSERT INTO ev VALUES (11, NULL, 'n'), (12, NULL, 'n')""")
    schema = source.reflect(TableName("ev"))
    t5 = dt.datetime(2024, 1, 1, 5, tzinfo=UTC)
    t8 = dt.datetime(2024, 1, 1, 8, tzinfo=UTC)

    def ids(*filters: RowFilter) -> list[int]:
        return sorted(r["id"] for r in read_all(source, schema, list(filters)))

    assert ids(RowFilter("at", lower=Bound(t5, False))) == [6, 7, 8, 9, 10]
    assert ids(RowFilter("at", lower=Bound(t5, True))) == [5, 6, 7, 8, 9, 10]
    assert ids(RowFilter("at", lower=Bound(t5, False), upper=Bound(t8, True))) == [6, 7, 8]
    assert ids(RowFilter("at", upper=Bound(t8, False))) == [1, 2, 3, 4, 5, 6, 7]
    assert ids(RowFilter("at", only_nulls=True)) == [11, 12]
    assert ids(RowFilter("we%s {x}", lower=Bound("v9", True))) == [9]
    assert ids(RowFilter("id", lower=Bound(2, True)), RowFilter("id", upper=Bound(3, True))) == [2, 3]
    assert ids(RowFilter("we%s {x}", lower=Bound("it's", True), upper=Bound("o", False))) == [11, 12]

    table = schema.table
    assert source.count(table) == 12
    assert source.count(table, [RowFilter("at", only_nulls=True)]) == 2
    assert source.count(table, [RowFilter("at", lower=Bound(t5, False))]) == 5
    assert source.max_value(table, "at") == dt.datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert source.key_range(table, "id") == (1, 12)
    postgres_server.psql(db_of(pg_url), "CREATE TABLE empty (id int)")
    assert source.max_value(TableName("empty"), "id") is None
    assert source.key_range(TableName("empty"), "id") == (None, None)
    assert list(source.read(source.reflect(TableName("empty")))) == []
    assert ids(RowFilter("id", lower=Bound(100, True))) == []


def test_clone_reads_in_parallel(postgres_server: PostgresServer, pg_url: str, source: PostgresSource) -> None:
    make_items(postgres_server, pg_url)
    schema = source.reflect(TableName("items"))
    other = source.clone()
    try:
        first = source.read(schema, batch_rows=1)
        next(first)
        assert other.count(schema.table) == 3  # the clone is free while the first read is open
        assert len(list(first)) == 2
    finally:
        other.close()


# ---------------------------------------------------------------- errors at the boundary


def test_wrong_password(postgres_server: PostgresServer) -> None:
    url = parse_url(postgres_server.url(password="s3cr3t-Wrong"))
    for connector in (PostgresSource, PostgresDestination):
        with pytest.raises(AuthenticationFailed) as info:
            connector(url)
        assert "s3cr3t-Wrong" not in str(info.value)
        assert not info.value.retriable


def test_unreachable_server_is_retriable(postgres_server: PostgresServer) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionFailed) as info:
        PostgresSource(parse_url(f"postgresql://postgres:pw-x1@127.0.0.1:{port}/postgres"))
    assert info.value.retriable
    assert "pw-x1" not in str(info.value)


def test_dropped_connection_is_retriable(postgres_server: PostgresServer, pg_url: str,
                                        dest: PostgresDestination) -> None:
    make_items(postgres_server, pg_url)
    session = dest.begin_load(SIMPLE, "append", [])
    postgres_server.psql(db_of(pg_url), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with pytest.raises(ConnectionFailed) as info:
        session.write(simple_batch([(9, "x")]))
    assert info.value.retriable
    assert table_rows(postgres_server, pg_url) == ["1|a", "2|b", "3|c"]


def test_refused_values_are_data_errors(dest: PostgresDestination) -> None:
    schema = TableSchema(TableName("short"), (Column("id", LogicalType("int64"), nullable=False),
                                              Column("code", LogicalType("string", length=3))))
    dest.create_table(schema)
    batch = pa.RecordBatch.from_arrays([pa.array([1, 2]), pa.array(["abc", "toolong"])],
                                       schema=schema.arrow_schema())
    session = dest.begin_load(schema, "append", [])
    with pytest.raises(DataError, match=r"short.*line 2.*code"):
        session.write(batch)
    with pytest.raises(Exception, match="already committed or aborted"):
        session.write(batch)  # the session rolled back and closed itself

    null_id = pa.RecordBatch.from_arrays([pa.array([None], pa.int64()), pa.array(["x"])],
                                         schema=pa.schema([pa.field("id", pa.int64()), pa.field("code", pa.string())]))
    session = dest.begin_load(schema, "append", [])
    with pytest.raises(DataError, match="short"):
        session.write(null_id)
        session.commit(None)
    assert dest.read_marker("j", "short") is None


def test_python_side_value_errors_name_the_row(dest: PostgresDestination) -> None:
    schema = TableSchema(TableName("small"), (Column("n", LogicalType("int16")),))
    dest.create_table(schema)
    session = dest.begin_load(schema, "append", [])
    wide = pa.RecordBatch.from_arrays([pa.array([1, 2, 70000], pa.int64())], names=["n"])
    with pytest.raises(DataError, match=r"row 3.*small.*70000.*'n'"):  # psycopg itself would wrap it silently
        session.write(wide)

    schema = TableSchema(TableName("ids"), (Column("u", LogicalType("uuid")),))
    dest.create_table(schema)
    session = dest.begin_load(schema, "append", [])
    bad = pa.RecordBatch.from_arrays([pa.array([str(uuid.uuid4()), None, "not-a-uuid"])], names=["u"])
    with pytest.raises(DataError, match=r"row 3.*ids.*not-a-uuid.*'u'"):
        session.write(bad)
    session = dest.begin_load(schema, "append", [])
    wrong_type = pa.RecordBatch.from_arrays([pa.array([1.5])], names=["u"])
    with pytest.raises(DataError, match=r"row 1.*ids"):
        session.write(wrong_type)


# ---------------------------------------------------------------- writing


def test_create_table_round_trip(dest: PostgresDestination) -> None:
    kinds = [LogicalType(k) for k in ("int16", "int32", "int64", "float32", "float64", "bool", "date", "time",
                                      "timestamp", "timestamptz", "binary", "uuid", "json", "string")]
    kinds += [LogicalType("decimal", precision=12, scale=2), LogicalType("decimal", precision=38, scale=0),
              LogicalType("decimal"), LogicalType("string", length=40)]
    columns = tuple(Column(f"c{i}", t, nullable=i % 2 == 1) for i, t in enumerate(kinds))
    schema = TableSchema(TableName("made", "fresh_schema"), columns, primary_key=("c0", "c2"))
    dest.create_table(schema)
    back = dest.reflect(schema.table)
    assert back is not None
    assert [(c.name, c.type, c.nullable) for c in back.columns] == [(c.name, c.type, c.nullable) for c in columns]
    assert back.primary_key == ("c0", "c2")
    natives = {c.name: c.native_type for c in back.columns}
    assert natives["c12"] == "jsonb" and natives["c9"] == "timestamp with time zone"
    assert natives["c14"] == "numeric(12,2)" and natives["c17"] == "character varying(40)"

    dest.create_table(TableSchema(TableName("nokey"), columns, ("c0",)), primary_key=False)
    nokey = dest.reflect(TableName("nokey"))
    assert nokey is not None and nokey.primary_key == ()


def test_write_every_type_round_trip(postgres_server: PostgresServer, pg_url: str, pg_url2: str,
                                     source: PostgresSource) -> None:
    postgres_server.psql(db_of(pg_url), ALL_TYPES_DDL)
    schema = source.reflect(TableName("all_types"))
    target = PostgresDestination(parse_url(pg_url2))
    try:
        target.create_table(schema)
        session = target.begin_load(schema, "append", [])
        written = sum(session.write(b) for b in source.read(schema))
        session.commit(None)
        assert written == 2
        back_schema = target.reflect(schema.table)
        assert back_schema is not None
    finally:
        target.close()
    reader = PostgresSource(parse_url(pg_url2))
    try:
        rows = sorted(read_all(reader, back_schema), key=lambda r: r["id"])
    finally:
        reader.close()
    # inet travels as text and char(5) becomes varchar(5): the values themselves are unchanged
    assert rows == [ROW1, ROW2]


def test_binary_pass_through(postgres_server: PostgresServer, pg_url: str, pg_url2: str,
                             source: PostgresSource) -> None:
    postgres_server.psql(db_of(pg_url), ALL_TYPES_DDL)
    postgres_server.psql(db_of(pg_url), "INSERT INTO all_types (id, k2) SELECT i, 1 FROM generate_series(3, 5000) i")
    # pass-through is for tables whose column types match exactly: the same DDL on both sides
    postgres_server.psql(db_of(pg_url2), ALL_TYPES_DDL + "TRUNCATE all_types")
    schema = source.reflect(TableName("all_types"))
    target = PostgresDestination(parse_url(pg_url2))
    try:
        session = target.begin_load(schema, "append", [])
        chunks = list(source.copy_out_binary(schema, [RowFilter("id", upper=Bound(4000, True))]))
        assert chunks and all(isinstance(c, bytes) for c in chunks)
        assert session.write_binary(iter(chunks)) == 4000
        session.commit(StateMarker("j", "all_types", "r", {}))

        session = target.begin_load(schema, "merge", ["id", "k2"])
        more = source.copy_out_binary(schema, [RowFilter("id", lower=Bound(3999, True))])
        assert session.write_binary(more) == 1002
        session.commit(None)
    finally:
        target.close()
    dump = "SELECT * FROM all_types ORDER BY id"
    assert postgres_server.psql(db_of(pg_url), dump) == postgres_server.psql(db_of(pg_url2), dump)


def test_odd_identifiers(postgres_server: PostgresServer, pg_url: str, dest: PostgresDestination) -> None:
    table = TableName('My "Table" %s {0}', 'Odd Schema')
    schema = TableSchema(table, (
        Column("Id Col", LogicalType("int64"), nullable=False),
        Column('Va"lue%', LogicalType("string", length=10)),
        Column("{brace}", LogicalType("int32")),
    ), primary_key=("Id Col",))
    dest.create_table(schema)
    back = dest.reflect(table)
    assert back is not None and back.column_names == ["Id Col", 'Va"lue%', "{brace}"]

    def batch(rows: list[tuple[int, str, int]]) -> pa.RecordBatch:
        cols = list(zip(*rows, strict=True))
        return pa.RecordBatch.from_arrays([pa.array(cols[0], pa.int64()), pa.array(cols[1]),
                                           pa.array(cols[2], pa.int32())], schema=schema.arrow_schema())

    session = dest.begin_load(schema, "append", [])
    session.write(batch([(1, "a", 10), (2, "b", 20)]))
    session.commit(None)
    session = dest.begin_load(schema, "merge", ["Id Col"])
    session.write(batch([(2, "b2", 21), (3, "c", 30)]))
    session.commit(StateMarker("j", str(table), "r", {}))
    dest.add_columns(table, [Column("New Col", LogicalType("bool"))])

    source = PostgresSource(parse_url(pg_url))
    try:
        got = read_all(source, schema, [RowFilter('Va"lue%', lower=Bound("a", False))])
        assert sorted((r["Id Col"], r['Va"lue%'], r["{brace}"]) for r in got) == [(2, "b2", 21), (3, "c", 30)]
        assert source.count(table, [RowFilter("{brace}", upper=Bound(21, True))]) == 2
        assert source.key_range(table, "Id Col") == (1, 3)
    finally:
        source.close()


def test_uuid_and_decimal_from_strings(pg_url: str, dest: PostgresDestination) -> None:
    """Values that arrive as Arrow strings (another system's uuid or free numeric) land in typed columns."""
    schema = TableSchema(TableName("conv"), (Column("u", LogicalType("uuid")), Column("n", LogicalType("decimal")),
                                             Column("j", LogicalType("json")), Column("t", LogicalType("timestamptz"))))
    dest.create_table(schema)
    u = uuid.uuid4()
    naive = pa.RecordBatch.from_arrays(
        [pa.array([str(u), None]), pa.array(["1.000000000000000000001", None]), pa.array(['{"k": [1]}', None]),
         pa.array([dt.datetime(2024, 5, 6, 7, 8, 9, 10), None], pa.timestamp("us"))],
        names=["u", "n", "j", "t"])
    session = dest.begin_load(schema, "append", [])
    session.write(naive)
    session.commit(None)
    source = PostgresSource(parse_url(pg_url))
    try:
        back = source.reflect(schema.table)
        assert read_all(source, back) == [
            {"u": str(u), "n": "1.000000000000000000001", "j": '{"k": [1]}',
             "t": dt.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=UTC)},
            {"u": None, "n": None, "j": None, "t": None}]
    finally:
        source.close()


def test_temporal_edges_round_trip(pg_url: str, dest: PostgresDestination) -> None:
    """Dates, times and timestamps are written as PostgreSQL's integers: check both sides of 1970 and 2000."""
    schema = TableSchema(TableName("when"), (
        Column("d", LogicalType("date")), Column("t", LogicalType("time")),
        Column("ts", LogicalType("timestamp")), Column("tz", LogicalType("timestamptz"))))
    dest.create_table(schema)
    moments = [dt.datetime(1, 1, 1), dt.datetime(1969, 12, 31, 23, 59, 59, 999999), dt.datetime(1999, 12, 31, 23),
               dt.datetime(2000, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999)]
    times = [dt.time(0), dt.time(0, 0, 0, 1), dt.time(12, 30), dt.time(23, 59, 59, 999999), dt.time(1)]
    batch = pa.RecordBatch.from_arrays([
        pa.array([m.date() for m in moments] + [None], pa.date32()),
        pa.array([*times, None], pa.time64("us")),
        pa.array([*moments, None], pa.timestamp("us", tz="UTC")),  # aware into timestamp: UTC wall time
        pa.array([*moments, None], pa.timestamp("us")),  # naive into timestamptz: taken as UTC
    ], names=["d", "t", "ts", "tz"])
    session = dest.begin_load(schema, "append", [])
    session.write(batch)
    session.commit(None)
    source = PostgresSource(parse_url(pg_url))
    try:
        back = source.reflect(schema.table)
        rows = read_all(source, back)
    finally:
        source.close()
    expected = [{"d": m.date(), "t": t, "ts": m, "tz": m.replace(tzinfo=UTC)}
                for m, t in zip(moments, times, strict=True)]
    assert rows == [*expected, {"d": None, "t": None, "ts": None, "tz": None}]


def test_values_python_cannot_hold_round_trip_through_arrow(postgres_server: PostgresServer, pg_url: str,
                                                            pg_url2: str) -> None:
    """infinity, BC, years past 9999 and 24:00 are read into Arrow and written back exactly (the merge,
    incremental and change capture paths all go through Arrow)."""
    postgres_server.psql(db_of(pg_url), "CREATE TABLE odd (d date, t time, ts timestamp, tz timestamptz); "
                         "INSERT INTO odd VALUES ('infinity', '24:00:00', '-infinity', '0044-03-15 12:30:00.5 BC'),"
                         " ('0044-03-15 BC', '00:00:01', '12345-06-07 01:02:03', 'infinity'),"
                         " ('2026-01-02', '23:59:59.999999', '2026-01-02 03:04:05.000006', '2026-01-02 03:04:05+00')")
    source = PostgresSource(parse_url(pg_url))
    dest = PostgresDestination(parse_url(pg_url2))
    try:
        schema = source.reflect(TableName("odd"))
        dest.create_table(schema)
        session = dest.begin_load(schema, "append", [])
        for batch in source.read(schema):
            session.write(batch)
        session.commit(None)
    finally:
        source.close()
        dest.close()
    query = "SET timezone = 'UTC'; SELECT d, t, ts, tz FROM odd ORDER BY t"
    assert postgres_server.psql(db_of(pg_url2), query) == postgres_server.psql(db_of(pg_url), query)


def test_numerics_wider_than_38_digits_read_exactly_and_a_scaled_nan_is_named(
        postgres_server: PostgresServer, pg_url: str, source: PostgresSource) -> None:
    """numeric(60,20) is an Arrow decimal256, which Arrow's CSV reader does not convert; a NaN in a
    numeric(p,s) fits no Arrow decimal: the error names the column."""
    wide = "1234567890123456789012345678901234567890.12345678901234567890"
    postgres_server.psql(db_of(pg_url), f"CREATE TABLE wide (w numeric(60,20), n numeric(12,2)); "
                         f"INSERT INTO wide VALUES ({wide}, 1.5), (NULL, NULL)")
    schema = source.reflect(TableName("wide"))
    assert read_all(source, schema) == [{"w": decimal.Decimal(wide), "n": decimal.Decimal("1.50")},
                                        {"w": None, "n": None}]
    postgres_server.psql(db_of(pg_url), "INSERT INTO wide VALUES (0, 'NaN')")
    with pytest.raises(DataError, match="column 'n'"):
        read_all(source, schema)


def test_inet_reads_as_its_output_text_as_logical_replication_sends_it(postgres_server: PostgresServer,
                                                                       pg_url: str, source: PostgresSource) -> None:
    """``inet::text`` adds the netmask (10.0.0.1/32); the stream sends 10.0.0.1: the snapshot must agree."""
    postgres_server.psql(db_of(pg_url), "CREATE TABLE nets (id int, ip inet, net cidr); INSERT INTO nets VALUES "
                         "(1, '10.0.0.1', '10.0.0.0/24'), (2, '10.0.0.1/24', '::1/128'), (3, NULL, NULL)")
    schema = source.reflect(TableName("nets"))
    want = [{"id": 1, "ip": "10.0.0.1", "net": "10.0.0.0/24"}, {"id": 2, "ip": "10.0.0.1/24", "net": "::1/128"},
            {"id": 3, "ip": None, "net": None}]
    assert sorted(read_all(source, schema), key=lambda r: r["id"]) == want
    decoded = pa.Table.from_batches(list(source.read_decoded(schema)), schema=schema.arrow_schema()).to_pylist()
    assert sorted(decoded, key=lambda r: r["id"]) == want

# ---------------------------------------------------------------- merge tables (also tests/connectors/postgres/)

DOCS = TableSchema(
    table=TableName("docs"),
    columns=(Column("id", LogicalType("int64"), nullable=False), Column("name", LogicalType("string")),
             Column("body", LogicalType("string"))),
    primary_key=("id",),
)


def docs_batch(rows: list[tuple[Any, ...]], names: tuple[str, ...] = ("id", "name", "body")) -> pa.RecordBatch:
    schema = DOCS.select(list(names)).arrow_schema()
    return pa.RecordBatch.from_pylist([dict(zip(names, r, strict=True)) for r in rows], schema=schema)


def make_docs(server: PostgresServer, url: str, key: bool = True) -> None:
    server.psql(db_of(url), f"CREATE TABLE docs (id bigint {'PRIMARY KEY' if key else ''}, name text, body text); "
                            "INSERT INTO docs VALUES (1,'a','big1'),(2,'b','big2'),(3,'c','big3')")


def test_update_columns_refuses_a_value_too_long(postgres_server: PostgresServer, pg_url: str,
                                                 dest: PostgresDestination) -> None:
    """varchar(n) is enforced on the UPDATE path too (NULL into NOT NULL: the contract suite)."""
    postgres_server.psql(db_of(pg_url), "CREATE TABLE docs (id bigint PRIMARY KEY, name varchar(3), body text); "
                                        "INSERT INTO docs VALUES (1,'a','x')")
    session = dest.begin_load(DOCS, "merge", ["id"])
    with pytest.raises(DataError, match="docs"):
        session.update_columns(docs_batch([(1, "too long")], ("id", "name")))
    session.abort()
    assert table_rows(postgres_server, pg_url, "docs") == ["1|a|x"]
