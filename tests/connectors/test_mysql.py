"""MySQL/MariaDB connector against a real MariaDB (tests/services/mariadb.py): what is MySQL's own (type
mapping, strict mode, collations, statement sizes, implicit commits of DDL). The behaviour every destination
shares is tested in test_destination_contract.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from copyjob.connectors.mysql import MysqlDestination, MysqlSource

from copyjob.core.contracts import Bound, RowFilter, StateMarker
from copyjob.core.errors import AuthenticationFailed, ConfigurationError, ConnectionFailed, DataError, TableNotFound
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import ConnectionUrl, parse_url
from tests.services.mariadb import MariadbServer

UTC = dt.UTC

ALL_TYPES_DDL = """
CREATE TABLE all_types (
  id INT NOT NULL, sub SMALLINT NOT NULL, b BOOLEAN, ti TINYINT, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED, f FLOAT, d DOUBLE,
  dec_ DECIMAL(12,2), wide DECIMAL(65,30), c CHAR(5), vc VARCHAR(20) NOT NULL, tx TEXT, lt LONGTEXT,
  dt_ DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL, bin BINARY(4), vb VARBINARY(10), bl BLOB,
  j JSON, e ENUM('x','y'), yr YEAR,
  PRIMARY KEY (id, sub)
)"""

EXPECTED_TYPES: dict[str, str] = {
    "id": "int32", "sub": "int16", "b": "bool", "ti": "int16", "si": "int16", "siu": "int32",
    "mi": "int32", "i": "int32", "iu": "int64", "bi": "int64", "biu": "decimal(20,0)", "f": "float32",
    "d": "float64", "dec_": "decimal(12,2)", "wide": "decimal(65,30)", "c": "string(5)",
    "vc": "string(20)", "tx": "string", "lt": "string", "dt_": "date", "tm": "time", "dtm": "timestamp",
    "ts": "timestamptz", "bin": "binary", "vb": "binary", "bl": "binary", "j": "json", "e": "string",
    "yr": "int16",
}

WIDE = "12345678901234567890123456789012345.123456789012345678901234567891"
FULL_ROW: dict[str, Any] = {
    "id": 1, "sub": 1, "b": True, "ti": -128, "si": -32768, "siu": 65535, "mi": -8388608,
    "i": -2147483648, "iu": 4294967295, "bi": -9223372036854775808, "biu": Decimal(18446744073709551615),
    "f": pa.array([1.2345678], pa.float32()).to_pylist()[0], "d": 1 / 3,
    "dec_": Decimal("-1234567890.12"), "wide": Decimal(WIDE), "c": "ab", "vc": "héllo ✓ 😀",
    "tx": "line\nwith \\ and ' and \"", "lt": "x" * 70_000, "dt_": dt.date(2024, 2, 29),
    "tm": dt.time(23, 59, 59, 999999), "dtm": dt.datetime(2024, 2, 29, 13, 14, 15, 123456),
    "ts": dt.datetime(2024, 2, 29, 13, 14, 15, 654321, tzinfo=UTC), "bin": b"\x00\xff\x10\x20",
    "vb": b"\xde\xad\xbe\xef", "bl": b"", "j": '{"a": [1, 2]}', "e": "y", "yr": 2024,
}


# ---------------------------------------------------------------- helpers


@pytest.fixture
def url(mariadb_url: str) -> ConnectionUrl:
    return parse_url(mariadb_url)


@pytest.fixture
def source(url: ConnectionUrl) -> Iterator[MysqlSource]:
    src = MysqlSource(url)
    yield src
    src.close()


@pytest.fixture
def dest(url: ConnectionUrl) -> Iterator[MysqlDestination]:
    d = MysqlDestination(url)
    yield d
    d.close()


def sql(server: MariadbServer, url: ConnectionUrl, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements on one root connection in the test's database; rows of the last one."""
    conn = server.connect(url.database)
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
            return list(cur.fetchall())
    finally:
        conn.close()


def read_all(src: MysqlSource, schema: TableSchema, filters: tuple[RowFilter, ...] = (),
             batch_rows: int = 50_000) -> list[dict[str, Any]]:
    batches = list(src.read(schema, filters, batch_rows=batch_rows))
    for b in batches:
        assert b.schema.equals(schema.arrow_schema())
    return pa.Table.from_batches(batches, schema.arrow_schema()).to_pylist()


def people_schema(name: str = "people", key: tuple[str, ...] = ("id",)) -> TableSchema:
    return TableSchema(
        table=TableName(name),
        columns=(Column("id", LogicalType("int64"), nullable=False), Column("name", LogicalType("string")),
                 Column("score", LogicalType("decimal", 8, 2))),
        primary_key=key,
    )


def people_batch(rows: list[tuple[int, str | None, str | None]]) -> pa.RecordBatch:
    ids, names, scores = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.RecordBatch.from_arrays(
        [pa.array(ids, pa.int64()), pa.array(names, pa.string()),
         pa.array([None if s is None else Decimal(s) for s in scores], pa.decimal128(8, 2))],
        schema=people_schema().arrow_schema())


def load(dest: MysqlDestination, schema: TableSchema, batches: list[pa.RecordBatch], method: Any = "append",
         key: tuple[str, ...] = (), marker: StateMarker | None = None, **kw: Any) -> None:
    session = dest.begin_load(schema, method, key, **kw)
    for b in batches:
        session.write(b)
    session.commit(marker)


def table_rows(server: MariadbServer, url: ConnectionUrl, table: str = "people") -> list[tuple[Any, ...]]:
    return sql(server, url, f"SELECT * FROM `{table}` ORDER BY 1")


# ---------------------------------------------------------------- source


def test_reflect_every_type(mariadb_server: MariadbServer, url: ConnectionUrl, source: MysqlSource) -> None:
    sql(mariadb_server, url, ALL_TYPES_DDL)
    schema = source.reflect(TableName("all_types"))
    assert {c.name: str(c.type) for c in schema.columns} == EXPECTED_TYPES
    assert schema.column_names == list(EXPECTED_TYPES)
    assert schema.primary_key == ("id", "sub")
    assert schema.table == TableName("all_types", url.database)
    nullable = {c.name: c.nullable for c in schema.columns}
    assert not nullable["id"] and not nullable["vc"] and nullable["tx"]
    natives = {c.name: c.native_type for c in schema.columns}
    assert natives["dec_"] == "decimal(12,2)" and natives["siu"] == "smallint(5) unsigned"
    # the schema may name the database explicitly
    assert source.reflect(TableName("all_types", url.database)).columns == schema.columns


def _insert_full_row(server: MariadbServer, url: ConnectionUrl) -> None:
    wide, lt = WIDE, "x" * 70_000
    sql(server, url, ALL_TYPES_DDL,
        "SET time_zone = '+02:00'",  # TIMESTAMP is stored in UTC whatever the writer's zone
        "INSERT INTO all_types VALUES (1, 1, TRUE, -128, -32768, 65535, -8388608, -2147483648, 4294967295,"
        " -9223372036854775808, 18446744073709551615, 1.2345678, 1e0/3, -1234567890.12, "
        f"'{wide}', 'ab', 'héllo ✓ 😀', 'line\\nwith \\\\ and \\' and \"', '{lt}', '2024-02-29', "
        "'23:59:59.999999', '2024-02-29 13:14:15.123456', '2024-02-29 15:14:15.654321', x'00ff1020', "
        "x'deadbeef', '', '{\"a\": [1, 2]}', 'y', 2024)",
        "INSERT INTO all_types (id, sub, vc) VALUES (2, 1, '')")


def test_read_every_type_with_nulls(mariadb_server: MariadbServer, url: ConnectionUrl,
                                    source: MysqlSource) -> None:
    _insert_full_row(mariadb_server, url)
    schema = source.reflect(TableName("all_types"))
    rows = sorted(read_all(source, schema), key=lambda r: r["id"])
    assert rows[0] == FULL_ROW
    assert rows[0]["d"] == 1 / 3  # doubles keep every bit
    nulls = {k: v for k, v in rows[1].items() if k not in ("id", "sub", "vc")}
    assert set(nulls.values()) == {None}


def test_read_batches_and_filters(mariadb_server: MariadbServer, url: ConnectionUrl,
                                  source: MysqlSource) -> None:
    values = ", ".join(f"({i}, '2024-01-01 00:00:0{i}', {'NULL' if i % 3 == 0 else i})" for i in range(10))
    sql(mariadb_server, url, "CREATE TABLE ev (id INT PRIMARY KEY, at TIMESTAMP(6) NULL, v INT)",
        f"INSERT INTO ev VALUES {values}")
    schema = source.reflect(TableName("ev"))
    assert len(list(source.read(schema, batch_rows=3))) == 4
    ids = [r["id"] for r in read_all(source, schema, (RowFilter("id", Bound(2, False), Bound(6, True)),))]
    assert sorted(ids) == [3, 4, 5, 6]
    only_nulls = read_all(source, schema, (RowFilter("v", only_nulls=True),))
    assert sorted(r["id"] for r in only_nulls) == [0, 3, 6, 9]
    # an aware bound in another zone compares as the same instant
    paris = dt.timezone(dt.timedelta(hours=1))
    after = RowFilter("at", lower=Bound(dt.datetime(2024, 1, 1, 1, 0, 7, tzinfo=paris), True))
    assert sorted(r["id"] for r in read_all(source, schema, (after,))) == [7, 8, 9]
    assert source.count(TableName("ev"), (after,)) == 3
    assert source.count(TableName("ev")) == 10


def test_max_count_key_range(mariadb_server: MariadbServer, url: ConnectionUrl, source: MysqlSource) -> None:
    sql(mariadb_server, url, "CREATE TABLE m (id BIGINT PRIMARY KEY, at TIMESTAMP(6) NULL, f FLOAT)")
    t = TableName("m")
    assert source.max_value(t, "id") is None
    assert source.key_range(t, "id") == (None, None)
    assert source.count(t) == 0
    sql(mariadb_server, url, "INSERT INTO m VALUES (-5, '2024-05-01 10:00:00.5', 0.1), (42, NULL, 2.5)")
    assert source.max_value(t, "id") == 42
    assert source.key_range(t, "id") == (-5, 42)
    assert source.max_value(t, "at") == dt.datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)
    assert source.max_value(t, "f") == 2.5
    with pytest.raises(ConfigurationError):
        source.max_value(t, "nope")


def test_clone_reads_independently(mariadb_server: MariadbServer, url: ConnectionUrl,
                                   source: MysqlSource) -> None:
    sql(mariadb_server, url, "CREATE TABLE c (id INT PRIMARY KEY)", "INSERT INTO c VALUES (1), (2), (3)")
    schema = source.reflect(TableName("c"))
    other = source.clone()
    try:
        stream = source.read(schema, batch_rows=1)
        next(stream)
        assert other.count(TableName("c")) == 3  # while the first stream is still open
        assert source.count(TableName("c")) == 3
        stream.close()
    finally:
        other.close()


def test_missing_table(source: MysqlSource) -> None:
    with pytest.raises(TableNotFound, match="nope"):
        source.reflect(TableName("nope"))
    with pytest.raises(TableNotFound, match="nope"):
        list(source.read(people_schema("nope")))
    with pytest.raises(TableNotFound, match="nope"):
        source.count(TableName("nope"))


def test_wrong_password(url: ConnectionUrl, mariadb_server: MariadbServer) -> None:
    bad = parse_url(mariadb_server.url(url.database, password="s3cr3t-Wrong"))
    with pytest.raises(AuthenticationFailed) as info:
        MysqlSource(bad)
    assert "s3cr3t-Wrong" not in str(info.value) and "***" in str(info.value)
    assert not info.value.retriable
    with pytest.raises(AuthenticationFailed):
        MysqlDestination(bad)


def test_unreachable_server_is_retriable() -> None:
    with pytest.raises(ConnectionFailed) as info:
        MysqlSource(parse_url("mysql://u:pw-xyz@127.0.0.1:1/db?connect_timeout=2"))
    assert info.value.retriable and "pw-xyz" not in str(info.value)


# ---------------------------------------------------------------- destination


def test_merge_string_keys_are_case_sensitive(mariadb_server: MariadbServer, url: ConnectionUrl,
                                              dest: MysqlDestination) -> None:
    schema = TableSchema(TableName("k"), (Column("code", LogicalType("string"), nullable=False),
                                          Column("v", LogicalType("int32"))), ("code",))
    dest.create_table(schema)
    batch = pa.RecordBatch.from_pydict({"code": ["a", "A", "a"], "v": [1, 2, 3]}, schema=schema.arrow_schema())
    load(dest, schema, [batch], "merge", ("code",))
    assert sorted(sql(mariadb_server, url, "SELECT code, v FROM k")) == [("A", 2), ("a", 3)]


LOGICAL_ROUND_TRIP: list[tuple[LogicalType, str, str]] = [
    # logical type written, MySQL type, logical type reflected back
    (LogicalType("int16"), "smallint(6)", "int16"),
    (LogicalType("int32"), "int(11)", "int32"),
    (LogicalType("int64"), "bigint(20)", "int64"),
    (LogicalType("float32"), "float", "float32"),
    (LogicalType("float64"), "double", "float64"),
    (LogicalType("decimal", 12, 2), "decimal(12,2)", "decimal(12,2)"),
    (LogicalType("decimal", 70, 40), "decimal(65,30)", "decimal(65,30)"),
    (LogicalType("decimal"), "decimal(65,30)", "decimal(65,30)"),
    (LogicalType("string", length=40), "varchar(40)", "string(40)"),
    (LogicalType("string"), "longtext", "string"),
    (LogicalType("bool"), "tinyint(1)", "bool"),
    (LogicalType("date"), "date", "date"),
    (LogicalType("time"), "time(6)", "time"),
    (LogicalType("timestamp"), "datetime(6)", "timestamp"),
    (LogicalType("timestamptz"), "datetime(6)", "timestamp"),
    (LogicalType("binary"), "longblob", "binary"),
    (LogicalType("uuid"), "char(36)", "string(36)"),
    (LogicalType("json"), "longtext", "json"),
]


def _round_trip_schema() -> TableSchema:
    columns = [Column("k", LogicalType("string"), nullable=False), Column("kb", LogicalType("binary"),
                                                                          nullable=False)]
    columns += [Column(f"c{i}", t) for i, (t, _, _) in enumerate(LOGICAL_ROUND_TRIP)]
    return TableSchema(TableName("rt", None), tuple(columns), ("k", "kb"))


def test_create_table_reflects_back(dest: MysqlDestination) -> None:
    dest.create_table(_round_trip_schema())
    got = dest.reflect(TableName("rt"))
    assert got is not None and got.primary_key == ("k", "kb")
    assert [(c.native_type, str(c.type)) for c in got.columns] == [
        ("varchar(255)", "string(255)"), ("varbinary(255)", "binary"),
        *[(native, back) for _, native, back in LOGICAL_ROUND_TRIP]]
    assert not got.columns[0].nullable and got.columns[2].nullable


def test_write_then_read_every_logical_type(url: ConnectionUrl, dest: MysqlDestination,
                                            source: MysqlSource) -> None:
    schema = _round_trip_schema()
    dest.create_table(schema)
    values: list[Any] = [
        -32768, 2147483647, -9223372036854775808, pa.array([0.1], pa.float32()).to_pylist()[0], 1e300,
        Decimal("-9999999999.99"), Decimal("1.5"), "123.456", "x", "🙂 '\\\x00\"",
        True, dt.date(1, 1, 1), dt.time(0, 0, 0, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        dt.datetime(2024, 6, 1, 12, 0, 0, 7, tzinfo=dt.timezone(dt.timedelta(hours=-5))), b"\x00\x01'\\",
        "0b7e3a52-9d3c-4a1e-8a15-0e5a3c1f2b6d", '{"k": "v"}',
    ]
    full = dict(zip(schema.column_names, ["key", b"\x00k", *values], strict=True))
    empty = {"k": "nulls", "kb": b"", **{c: None for c in schema.column_names[2:]}}
    batch = pa.RecordBatch.from_pylist([full, empty], schema=schema.arrow_schema())
    load(dest, schema, [batch])
    back = source.reflect(TableName("rt"))
    rows = sorted(read_all(source, back), key=lambda r: r["k"])
    expected = dict(full)
    expected["c6"] = Decimal("1.5" + "0" * 29)  # DECIMAL(65,30) pads the scale
    expected["c7"] = Decimal("123.456" + "0" * 27)
    expected["c14"] = dt.datetime(2024, 6, 1, 17, 0, 0, 7)  # timestamptz is written as naive UTC
    assert rows[0] == expected
    assert rows[1] == empty


def test_deferred_key_is_added_before_the_rows_and_may_be_there_already(mariadb_server: MariadbServer,
                                                                         url: ConnectionUrl,
                                                                         dest: MysqlDestination) -> None:
    """InnoDB stores rows in key order, so the deferred key is added while the table is empty, before the
    load's transaction (DDL commits implicitly): a duplicate fails the write, and the key stays."""
    schema = people_schema()
    dest.create_table(schema, primary_key=False)
    session = dest.begin_load(schema, "append", (), deferred_key=("id",))
    reflected = dest.reflect(schema.table)
    assert reflected is not None and reflected.primary_key == ("id",)  # before any row
    with pytest.raises(DataError, match="people"):
        session.write(people_batch([(1, "a", "1"), (1, "b", "2")]))
    session.abort()
    assert table_rows(mariadb_server, url) == []
    load(dest, schema, [people_batch([(2, "b", "2")])], deferred_key=("id",))  # key already there: fine
    assert table_rows(mariadb_server, url) == [(2, "b", Decimal("2.00"))]


def test_refused_value_names_table_and_row(mariadb_server: MariadbServer, url: ConnectionUrl,
                                           dest: MysqlDestination) -> None:
    schema = TableSchema(TableName("small"), (Column("id", LogicalType("int64"), nullable=False),
                                              Column("n", LogicalType("int16")),
                                              Column("pad", LogicalType("string"))), ("id",))
    dest.create_table(schema)
    n = 20_000  # ~6 MB of SQL: several INSERT statements, the bad row in a later one
    ids = list(range(n))
    small: list[int | None] = [1] * n
    small[15_000] = None
    session = dest.begin_load(schema, "append", ())
    session.write(pa.RecordBatch.from_pydict({"id": ids, "n": small, "pad": ["p" * 300] * n},
                                             schema=schema.arrow_schema()))
    wide = TableSchema(schema.table, (schema.columns[0], Column("n", LogicalType("int32")), schema.columns[2]),
                       ("id",))
    bad = [1] * n
    bad[17_000] = 40_000
    with pytest.raises(DataError) as info:
        session.write(pa.RecordBatch.from_pydict({"id": [i + n for i in ids], "n": bad, "pad": ["q" * 300] * n},
                                                 schema=wide.arrow_schema()))
    session.abort()
    message = str(info.value)
    assert "small" in message and "'n'" in message
    assert "row 37001 of this load" in message and "id=37000" in message
    assert table_rows(mariadb_server, url, "small") == []


def test_nan_is_refused(dest: MysqlDestination) -> None:
    schema = TableSchema(TableName("fl"), (Column("x", LogicalType("float64")),))
    dest.create_table(schema)
    session = dest.begin_load(schema, "append", ())
    with pytest.raises(DataError, match="NaN"):
        session.write(pa.RecordBatch.from_pydict({"x": [1.0, float("nan")]}, schema=schema.arrow_schema()))
    session.abort()


def test_a_load_key_must_be_a_column_even_for_append(dest: MysqlDestination) -> None:
    schema = people_schema()
    dest.create_table(schema)
    with pytest.raises(ConfigurationError, match="nope"):
        dest.begin_load(schema, "append", ("nope",))


def test_merge_without_a_key_uses_the_schemas_primary_key(mariadb_server: MariadbServer, url: ConnectionUrl,
                                                          dest: MysqlDestination) -> None:
    """Unlike the other destinations, which refuse it (the contract suite allows both)."""
    schema = people_schema()
    dest.create_table(schema)
    load(dest, schema, [people_batch([(1, "a", "1"), (1, "b", None)])], "merge", ())
    assert table_rows(mariadb_server, url) == [(1, "b", None)]


def test_odd_identifiers_and_other_database(mariadb_server: MariadbServer, url: ConnectionUrl,
                                            dest: MysqlDestination, source: MysqlSource) -> None:
    other_db = f"{url.database}_x`y z"
    table = TableName("my `odd` table %s", other_db)
    schema = TableSchema(table, (Column("key col`", LogicalType("int32"), nullable=False),
                                 Column("val %s ue", LogicalType("string", length=10))), ("key col`",))
    dest.create_table(schema)  # creates the database too
    batch = pa.RecordBatch.from_pydict({"key col`": [1, 2, 1], "val %s ue": ["a", "b", "c"]},
                                       schema=schema.arrow_schema())
    load(dest, schema, [batch], "merge", ("key col`",), marker=StateMarker("j", str(table), "r", {}))
    reflected = source.reflect(table)
    assert reflected.column_names == ["key col`", "val %s ue"] and reflected.primary_key == ("key col`",)
    filt = (RowFilter("key col`", Bound(0, False), Bound(5, True)),)
    assert sorted(read_all(source, reflected, filt), key=lambda r: r["key col`"]) == [
        {"key col`": 1, "val %s ue": "c"}, {"key col`": 2, "val %s ue": "b"}]
    assert source.max_value(table, "val %s ue") == "c"
    assert dest.read_marker("j", str(table)) is not None
    mariadb_server.execute(f"DROP DATABASE `{other_db.replace('`', '``')}`")


def test_zero_dates_read_as_null_and_long_times_refused(mariadb_server: MariadbServer, url: ConnectionUrl,
                                                        source: MysqlSource) -> None:
    sql(mariadb_server, url, "SET sql_mode = ''",
        "CREATE TABLE z (id INT PRIMARY KEY, d DATE NOT NULL, t DATETIME(3), tm TIME(6))",
        "INSERT INTO z VALUES (1, '0000-00-00', '0000-00-00 00:00:00', '12:00:00'), "
        "(2, '2024-01-02', '2024-01-02 03:04:05.678', '-00:00:00.5')")
    schema = source.reflect(TableName("z"))
    rows = read_all(source, schema, (RowFilter("id", upper=Bound(1, True)),))
    assert rows == [{"id": 1, "d": None, "t": None, "tm": dt.time(12)}]
    with pytest.raises(DataError, match=r"z.*TIME value"):
        read_all(source, schema)


def test_registry_opens_both_schemes(mariadb_url: str) -> None:
    from copyjob.connectors import open_destination, open_source

    for raw in (mariadb_url, mariadb_url.replace("mysql://", "mariadb://", 1)):
        src, dst = open_source(parse_url(raw)), open_destination(parse_url(raw))
        assert isinstance(src, MysqlSource) and isinstance(dst, MysqlDestination)
        src.close()
        dst.close()


def test_update_columns_refuses_a_value_too_long(mariadb_server: MariadbServer, url: ConnectionUrl,
                                                 dest: MysqlDestination) -> None:
    """Strict mode: the UPDATE path refuses what a lenient server would cut (NULL into NOT NULL: the contract)."""
    schema = TableSchema(TableName("people"), (Column("id", LogicalType("int64"), nullable=False),
                                               Column("name", LogicalType("string", length=3))), ("id",))
    dest.create_table(schema)
    load(dest, schema, [pa.RecordBatch.from_pydict({"id": [1], "name": ["a"]}, schema=schema.arrow_schema())])
    session = dest.begin_load(schema, "merge", ("id",))
    with pytest.raises(DataError, match="people"):
        session.update_columns(pa.RecordBatch.from_pydict({"id": [1], "name": ["too long"]},
                                                          schema=schema.arrow_schema()))
    session.abort()
    assert table_rows(mariadb_server, url) == [(1, "a")]


