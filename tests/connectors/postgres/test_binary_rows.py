"""Arrow batches into PostgreSQL through the load session: every type the batch encoder covers, the types it
hands to psycopg's dumpers, NULLs, sliced batches and the row-naming errors. Values are compared with what
SELECT returns."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from copyjob.connectors.postgres.destination import PostgresDestination

from copyjob.core.errors import DataError
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url

UTC = dt.UTC
D = decimal.Decimal
U1 = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
U2 = uuid.UUID(int=0)
U3 = uuid.UUID(int=2**128 - 1)


@pytest.fixture
def dest(pg_url: str) -> Iterator[PostgresDestination]:
    d = PostgresDestination(parse_url(pg_url))
    yield d
    d.close()


def create(url: str, ddl: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ddl)


def select(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        return conn.execute(sql).fetchall()


def load(dest: PostgresDestination, table: str, *batches: pa.RecordBatch) -> None:
    """Append the batches in one load (the table's own column types decide the wire format)."""
    names = batches[0].schema.names
    schema = TableSchema(TableName(table), tuple(Column(n, LogicalType("string")) for n in names))
    session = dest.begin_load(schema, "append", [])
    for batch in batches:
        session.write(batch)
    session.commit(None)


# ---------------------------------------------------------------- the vectorised types

SCALARS_NAMES = ["pos", "i2", "i4", "i8", "i4_from_u16", "i8_from_i8", "f4", "f8", "f8_from_f32", "b", "t", "vc", "ch",
                 "nm", "ba", "ba_fixed"]
SCALARS_DDL = """CREATE TABLE scalars (
    pos int4, i2 int2, i4 int4, i8 int8, i4_from_u16 int4, i8_from_i8 int8, f4 float4, f8 float8, f8_from_f32 float8,
    b bool, t text, vc varchar(20), ch char(5), nm name, ba bytea, ba_fixed bytea)"""
# float4 read back as float8: exact, where its text form would round
SELECT_SCALARS = f"SELECT {', '.join('f4::float8' if n == 'f4' else n for n in SCALARS_NAMES)} FROM scalars " \
                 "ORDER BY pos"
SCALARS: dict[str, pa.Array] = {
    "pos": pa.array([0, 1, 2, 3, 4], pa.int32()),
    "i2": pa.array([-(2**15), 2**15 - 1, None, 0, -1], pa.int64()),
    "i4": pa.array([-(2**31), 2**31 - 1, 0, None, 42], pa.int32()),
    "i8": pa.array([-(2**63), 2**63 - 1, None, 0, -7], pa.int64()),
    "i4_from_u16": pa.array([0, 65535, None, 1, 2], pa.uint16()),
    "i8_from_i8": pa.array([-128, 127, 0, None, 1], pa.int8()),
    "f4": pa.array([1.5, -0.0, float("inf"), None, 3.25e38], pa.float32()),
    "f8": pa.array([math.pi, -1e-300, float("-inf"), 1e300, None], pa.float64()),
    "f8_from_f32": pa.array([0.5, None, -2.5, 1e30, 0.0], pa.float32()),
    "b": pa.array([True, False, None, True, False]),
    "t": pa.array(["", "héllo wörld ✓ 日本語", None, "tab\tand\nnewline", "a" * 10_000]),
    "vc": pa.array(["short", None, "", "ünïcode", "x" * 20], pa.large_string()),
    "ch": pa.array(["ab", "abcde", None, "", "é"]),
    "nm": pa.array(["pg_class", None, "", "naïve", "n"]),
    "ba": pa.array([b"", b"\x00\xff\x00", None, bytes(range(256)), b"z"]),
    "ba_fixed": pa.array([b"abc", b"\x00\x00\x00", None, b"\xff\xfe\xfd", b"xyz"], pa.binary(3)),
}


def expected_scalars() -> list[tuple[Any, ...]]:
    columns = {name: array.to_pylist() for name, array in SCALARS.items()}
    columns["ch"] = [None if v is None else v.ljust(5) for v in columns["ch"]]  # char(5) pads with blanks
    columns["ba_fixed"] = [None if v is None else bytes(v) for v in columns["ba_fixed"]]
    return list(zip(*columns.values(), strict=True))


def scalars_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(list(SCALARS.values()), names=list(SCALARS))


def test_scalar_types_round_trip(pg_url: str, dest: PostgresDestination) -> None:
    create(pg_url, SCALARS_DDL)
    load(dest, "scalars", scalars_batch())
    assert select(pg_url, SELECT_SCALARS) == expected_scalars()


def test_sliced_batches_round_trip(pg_url: str, dest: PostgresDestination) -> None:
    """Slices start at a non-zero offset into every buffer (values, offsets, validity bitmaps)."""
    create(pg_url, SCALARS_DDL)
    batch = scalars_batch()
    load(dest, "scalars", batch.slice(1, 3), batch.slice(4), batch.slice(0, 1))
    assert select(pg_url, SELECT_SCALARS) == expected_scalars()


NUMERIC_DDL = """CREATE TABLE nums (pos int4, n12_2 numeric(12,2), n18_0 numeric(18,0), n18_18 numeric(18,18),
                                   n5_1 numeric(5,1), free numeric, n_from_wider_scale numeric(10,2))"""


def test_numeric_from_decimal_round_trips(pg_url: str, dest: PostgresDestination) -> None:
    """numeric travels as base-10000 digit groups: check signs, zero, both ends of the precision and scales
    that do and do not fill whole groups. Read back as text to also check the display scale."""
    create(pg_url, NUMERIC_DDL)
    rows = [
        ("0", "0", "0", "0", "0", "0"),
        ("1234567890.12", "999999999999999999", "0.999999999999999999", "9999.9", "12345678.123456", "1.005"),
        ("-1234567890.12", "-999999999999999999", "-0.000000000000000001", "-0.1", "-0.000001", "-1.004"),
        ("0.01", "1", "0.5", "1234.5", "100000000000.000000", "99999999.99"),
        ("-0.01", "-10000", "-0.123456789012345678", "-1", "-1", "0.00"),
        (None, None, None, None, None, None),
        ("10000.00", "100000000", "0.000100000000000000", "10.0", "0.000100", "-0.01"),
    ]
    types = [pa.decimal128(12, 2), pa.decimal128(18, 0), pa.decimal128(18, 18), pa.decimal128(5, 1),
             pa.decimal128(18, 6), pa.decimal128(12, 3)]
    arrays = [pa.array(range(len(rows)), pa.int32())]
    arrays += [pa.array([None if r[i] is None else D(r[i]) for r in rows], t) for i, t in enumerate(types)]
    batch = pa.RecordBatch.from_arrays(arrays, names=["pos", "n12_2", "n18_0", "n18_18", "n5_1", "free",
                                                      "n_from_wider_scale"])
    load(dest, "nums", batch.slice(0, 3), batch.slice(3))
    back = select(pg_url, "SELECT n12_2::text, n18_0::text, n18_18::text, n5_1::text, free::text, "
                          "n_from_wider_scale::text FROM nums ORDER BY pos")

    def typed(value: str | None, t: pa.Decimal128Type, target_scale: int | None) -> str | None:
        if value is None:
            return None
        as_arrow = D(value).quantize(D(1).scaleb(-t.scale))  # the decimal128 value, at the Arrow scale
        if target_scale is not None:  # the column's typmod rounds it, half away from zero
            as_arrow = as_arrow.quantize(D(1).scaleb(-target_scale), rounding=decimal.ROUND_HALF_UP)
        return format(as_arrow, "f")

    scales = [2, 0, 18, 1, None, 2]
    assert back == [tuple(typed(r[i], t, scales[i]) for i, t in enumerate(types)) for r in rows]


def test_numeric_overflow_is_refused(pg_url: str, dest: PostgresDestination) -> None:
    create(pg_url, "CREATE TABLE small_num (n numeric(4,2))")
    batch = pa.RecordBatch.from_arrays([pa.array([D("1.00"), D("123.45")], pa.decimal128(5, 2))], names=["n"])
    with pytest.raises(DataError, match="small_num"):
        load(dest, "small_num", batch)
    assert select(pg_url, "SELECT count(*) FROM small_num") == [(0,)]


TEMPORAL_DDL = """CREATE TABLE temporal (pos int4, d date, d64 date, ts timestamp, ts_ns timestamp,
                                        tz timestamptz, tz_from_naive timestamptz, tz_paris timestamptz,
                                        tm time, tm_s time)"""


def test_temporal_types_round_trip(pg_url: str, dest: PostgresDestination) -> None:
    create(pg_url, TEMPORAL_DDL)
    moments = [dt.datetime(1, 1, 1), dt.datetime(1899, 12, 31, 23, 59, 59, 999999),
               dt.datetime(1969, 12, 31, 23, 59, 59, 1), dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
               dt.datetime(2000, 1, 1), dt.datetime(2024, 2, 29, 12, 30, 0, 123456),
               dt.datetime(9999, 12, 31, 23, 59, 59, 999999), None]
    days = [None if m is None else m.date() for m in moments]
    times = [dt.time(0), dt.time(23, 59, 59, 999999), dt.time(12), dt.time(0, 0, 0, 1), None,
             dt.time(1, 2, 3), dt.time(23), dt.time(4, 5, 6, 7)]
    paris = [None if m is None else m.replace(tzinfo=UTC) for m in moments]
    batch = pa.RecordBatch.from_arrays([
        pa.array(range(len(moments)), pa.int32()),
        pa.array(days, pa.date32()),
        pa.array(days, pa.date64()),
        pa.array(moments, pa.timestamp("us")),
        pa.array(moments[2:6] + [None] * 4, pa.timestamp("ns")),  # ns only covers 1677..2262
        pa.array(moments, pa.timestamp("us", tz="UTC")),
        pa.array(moments, pa.timestamp("us")),  # naive into timestamptz: taken as UTC
        pa.array(paris, pa.timestamp("us", tz="Europe/Paris")),
        pa.array(times, pa.time64("us")),
        pa.array([None if t is None else t.replace(microsecond=0) for t in times], pa.time32("s")),
    ], names=["pos", "d", "d64", "ts", "ts_ns", "tz", "tz_from_naive", "tz_paris", "tm", "tm_s"])
    load(dest, "temporal", batch.slice(0, 5), batch.slice(5))
    back = select(pg_url, "SELECT * FROM temporal ORDER BY pos")
    aware = [None if m is None else m.replace(tzinfo=UTC) for m in moments]
    ns = moments[2:6] + [None] * 4
    assert back == [
        (i, days[i], days[i], moments[i], ns[i], aware[i], aware[i], aware[i], times[i],
         None if times[i] is None else times[i].replace(microsecond=0))
        for i in range(len(moments))]


def test_json_and_uuid_round_trip(pg_url: str, dest: PostgresDestination) -> None:
    create(pg_url, "CREATE TABLE docs (pos int4, j json, jb jsonb, u uuid, u_bytes uuid, u_upper uuid)")
    texts = ['{"b": [1, 2], "a": "é"}', "[]", None, '"text"', "{}"]
    uuids = [U1, U2, None, U3, uuid.UUID(int=12345)]
    batch = pa.RecordBatch.from_arrays([
        pa.array(range(5), pa.int32()),
        pa.array(texts),
        pa.array(texts, pa.large_string()),
        pa.array([None if u is None else str(u) for u in uuids]),
        pa.array([None if u is None else u.bytes for u in uuids], pa.binary(16)),
        pa.array([None if u is None else u.hex.upper() for u in uuids]),  # no hyphens, upper case
    ], names=["pos", "j", "jb", "u", "u_bytes", "u_upper"])
    load(dest, "docs", batch.slice(1), batch.slice(0, 1))
    back = select(pg_url, "SELECT j::text, jb::text, u, u_bytes, u_upper FROM docs ORDER BY pos")
    jsonb_text = ['{"a": "é", "b": [1, 2]}', "[]", None, '"text"', "{}"]  # jsonb normalises key order
    assert back == [(texts[i], jsonb_text[i], uuids[i], uuids[i], uuids[i]) for i in range(5)]


# ---------------------------------------------------------------- columns that go through psycopg's dumpers


def test_dumped_columns_mix_with_vectorised_ones(pg_url: str, dest: PostgresDestination) -> None:
    """Wide decimals, numerics from floats and strings, uuids with braces, text from numbers, intervals: each
    such column is written value by value next to the vectorised ones."""
    create(pg_url, "CREATE TABLE mixed (pos int8, wide numeric, wide256 numeric(40,5), from_float numeric, "
                   "from_text numeric, braces uuid, t_from_int text, iv interval, name text)")
    wide = [D("12345678901234567890123456789.000000001"), D("-1E-9"), None]
    batch = pa.RecordBatch.from_arrays([
        pa.array([0, 1, 2], pa.int64()),
        pa.array(wide, pa.decimal128(38, 9)),
        pa.array([D("1234567890.12345"), None, D("-1.5")], pa.decimal256(40, 5)),
        pa.array([1.25, None, -0.1]),
        pa.array(["1.000000000000000000001", "-7", None]),
        pa.array(["{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", None, "urn:uuid:" + str(U2)]),
        pa.array([None, 42, -1], pa.int64()),
        pa.array([dt.timedelta(days=1, microseconds=5), None, dt.timedelta(seconds=-30)], pa.duration("us")),
        pa.array(["x", None, "ü"]),
    ], names=["pos", "wide", "wide256", "from_float", "from_text", "braces", "t_from_int", "iv", "name"])
    load(dest, "mixed", batch.slice(1), batch.slice(0, 1))
    back = select(pg_url, "SELECT pos, wide::text, wide256::text, from_float::text, from_text::text, braces, "
                          "t_from_int, iv, name FROM mixed ORDER BY pos")
    assert back == [
        (0, "12345678901234567890123456789.000000001", "1234567890.12345", "1.25",
         "1.000000000000000000001", U1, None, dt.timedelta(days=1, microseconds=5), "x"),
        (1, "-0.000000001", None, None, "-7", None, "42", None, None),
        (2, None, "-1.50000", "-0.1", None, U2, "-1", dt.timedelta(seconds=-30), "ü"),
    ]


# ---------------------------------------------------------------- size and errors


def test_batches_larger_than_one_chunk(pg_url: str, dest: PostgresDestination) -> None:
    create(pg_url, "CREATE TABLE many (id int8, label text, amount numeric(12,2))")
    n = 150_001
    batch = pa.RecordBatch.from_arrays([
        pa.array(range(n), pa.int64()),
        pa.array([None if i % 7 == 0 else f"row {i}" for i in range(n)]),
        pa.array([D(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
    ], names=["id", "label", "amount"])
    load(dest, "many", batch.slice(1))
    assert select(pg_url, "SELECT count(*), min(id), max(id), count(label), sum(amount)::text, "
                          "max(label) FROM many") == [(n - 1, 1, n - 1, n - 1 - (n - 1) // 7,
                                                        format(sum(D(i) for i in range(n)) / 100, ".2f"), "row 99999")]


def test_bad_values_name_their_row_and_column(pg_url: str, dest: PostgresDestination) -> None:
    create(pg_url, "CREATE TABLE strict (id int8, small int2, u uuid, f4 float4)")

    def batch(small: list[Any], u: list[Any], f4: list[Any]) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([pa.array(range(len(small)), pa.int64()), pa.array(small, pa.int32()),
                                           pa.array(u), pa.array(f4, pa.float64())],
                                          names=["id", "small", "u", "f4"])

    good = batch([1, 2, 3, 4], [str(U1)] * 4, [1.0] * 4)
    with pytest.raises(DataError, match=r"row 2 of the batch into .*strict.*40000.*'small'"):
        load(dest, "strict", good, batch([1, 40000], [None, None], [None, None]))
    with pytest.raises(DataError, match=r"row 2 of the batch into .*strict.*'nope'.*'u'"):
        load(dest, "strict", batch([1, 2, 3, 4], [str(U1), None, "nope", str(U2)], [1.0] * 4).slice(1))
    with pytest.raises(DataError, match=r"row 4 of the batch into .*strict.*'bad'.*'u'"):
        load(dest, "strict", batch([1, 2, 3, 4], [None, None, None, "bad"], [1.0, 2.0, None, 1e300]))
    assert select(pg_url, "SELECT count(*) FROM strict") == [(0,)]
