"""The column-wise Avro paths against fastavro: random batches of every logical type, with NULLs, must give the
same bytes as the row-by-row encoder (fastavro's schemaless writer) and decode back to the same rows."""

from __future__ import annotations

import datetime as dt
import decimal
import random
import string
import uuid
from typing import Any

import pyarrow as pa
import pytest
from copyjob.connectors.kafka import codec
from copyjob.connectors.kafka.codec import Decoder, Encoder, SourceInfo
from copyjob.connectors.kafka.memory import MemoryTransport

from copyjob.core.changes import ChangeEvent
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema

TS = 1_767_348_000_123
INFO = SourceInfo("postgresql", "shop", "public", "things")
COLUMNS = (
    Column("id", LogicalType("int64"), nullable=False),
    Column("i16", LogicalType("int16")),
    Column("i32", LogicalType("int32")),
    Column("f64", LogicalType("float64")),
    Column("f32", LogicalType("float32")),
    Column("ok", LogicalType("bool")),
    Column("name", LogicalType("string")),
    Column("doc", LogicalType("json")),
    Column("ref", LogicalType("uuid")),
    Column("blob", LogicalType("binary")),
    Column("amount", LogicalType("decimal", 12, 2)),
    Column("exact", LogicalType("decimal", 18, 6)),
    Column("wide", LogicalType("decimal", 30, 5)),
    Column("free", LogicalType("decimal")),
    Column("day", LogicalType("date")),
    Column("at", LogicalType("time")),
    Column("local ts", LogicalType("timestamp")),
    Column("paid_at", LogicalType("timestamptz")),
)
SCHEMA = TableSchema(TableName("things", "public"), COLUMNS, primary_key=("id",))
EPOCH = dt.datetime(1970, 1, 1)


def _value(rng: random.Random, kind: str, precision: int | None, scale: int | None) -> Any:
    if kind == "int16":
        return rng.randint(-32768, 32767)
    if kind == "int32":
        return rng.choice([0, -1, 1, 63, -64, 64, rng.randint(-2**31, 2**31 - 1)])
    if kind == "int64":
        return rng.choice([0, -1, 2**63 - 1, -2**63, 2**56, -2**56 - 1, rng.randint(-2**63, 2**63 - 1),
                           rng.randint(-1000, 1000)])
    if kind in ("float64", "float32"):
        value = rng.choice([0.0, -0.0, 1.5, float("inf"), rng.uniform(-1e6, 1e6)])
        return value if kind == "float64" else float(pa.scalar(value, pa.float32()).as_py())
    if kind == "bool":
        return rng.random() < 0.5
    if kind in ("string", "json"):
        size = rng.choice([0, 1, 5, 130, 300])
        return "".join(rng.choice(string.ascii_letters + "é€😀") for _ in range(size))
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128)))
    if kind == "binary":
        return rng.randbytes(rng.choice([0, 1, 64, 200]))
    if kind == "decimal":
        if precision is None:
            return str(decimal.Decimal(rng.randint(-10**12, 10**12)).scaleb(-3))
        digits = rng.choice([1, 2, precision])
        unscaled = rng.choice([0, -128, 128, -127, 127, 255, -256, rng.randint(-10**digits + 1, 10**digits - 1)])
        return decimal.Decimal(unscaled).scaleb(-(scale or 0))
    if kind == "date":
        return dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(-200_000, 200_000))
    if kind == "time":
        return (dt.datetime(2000, 1, 1) + dt.timedelta(microseconds=rng.randint(0, 86_400 * 10**6 - 1))).time()
    if kind in ("timestamp", "timestamptz"):
        moment = EPOCH + dt.timedelta(microseconds=rng.randint(-2**55, 2**55))
        return moment.replace(tzinfo=dt.UTC) if kind == "timestamptz" else moment
    raise AssertionError(kind)


def random_batch(rng: random.Random, rows: int, null_share: float = 0.2) -> pa.RecordBatch:
    data = []
    for i in range(rows):
        row = {c.name: (None if c.nullable and rng.random() < null_share else
                        _value(rng, c.type.kind, c.type.precision, c.type.scale)) for c in COLUMNS}
        row["id"] = i if rng.random() < 0.5 else row["id"]
        data.append(row)
    return pa.RecordBatch.from_pylist(data, schema=SCHEMA.arrow_schema())


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "now_ms", lambda: TS)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("op", ["r", "u"])
def test_batch_encoding_is_byte_identical_to_fastavro(seed: int, op: str) -> None:
    rng = random.Random(seed)
    batch = random_batch(rng, rng.choice([1, 7, 200]), null_share=rng.choice([0.0, 0.2, 1.0]))
    enc = Encoder("avro", MemoryTransport()).for_table("shop.public.things", SCHEMA, ("id",))
    position = {"watermark": "2026-01-02T00:00:00+00:00", "run_id": "r1"}
    keys, values = enc._encode_vectorised(batch, op, INFO, position, TS) or ([], [])
    assert len(values) == batch.num_rows
    for row, key, value in zip(batch.to_pylist(), keys, values, strict=True):
        event = ChangeEvent(op, None, row, position=position, ts_ms=TS, snapshot=op == "r")  # type: ignore[arg-type]
        assert key == enc.encode_key(row)
        assert value == enc.encode_value(event, INFO), row


def test_registry_prefix_and_keyless_tables() -> None:
    rng = random.Random(99)
    batch = random_batch(rng, 20)
    keyless = TableSchema(SCHEMA.table, COLUMNS, ())

    class Registry(MemoryTransport):
        def register(self, subject: str, schema_json: str) -> bytes:
            super().register(subject, schema_json)
            return b"\x00" + (7 if subject.endswith("-value") else 8).to_bytes(4, "big")

    enc = Encoder("avro", Registry()).for_table("r.public.things", keyless, ())
    keys, values = enc._encode_vectorised(batch, "r", INFO, {}, TS) or ([], [])
    assert keys == [None] * 20 and all(v[:5] == b"\x00\x00\x00\x00\x07" for v in values)
    for row, value in zip(batch.to_pylist(), values, strict=True):
        assert value == enc.encode_value(ChangeEvent("r", None, row, ts_ms=TS, snapshot=True), INFO)


def test_encode_rows_uses_the_batch_path_and_decodes() -> None:
    bus = MemoryTransport()
    enc = Encoder("avro", bus).for_table("shop.public.things", SCHEMA, ("id",))
    batch = random_batch(random.Random(5), 50)
    pairs = list(enc.encode_rows(batch, "r", INFO, {"watermark": None}))
    decoder = Decoder(bus)
    for row, (key, value) in zip(batch.to_pylist(), pairs, strict=True):
        decoded = decoder.decode(value, key)
        assert decoded.op == "r" and decoded.key == {"id": row["id"]}
        assert decoded.after == {**row, "local ts": row["local ts"]}


def test_columns_of_other_arrow_types_are_cast_or_fall_back() -> None:
    schema = TableSchema(TableName("t"), (Column("id", LogicalType("int64")), Column("n", LogicalType("int32"))),
                         ("id",))
    enc = Encoder("avro", MemoryTransport()).for_table("x.main.t", schema, ("id",))
    batch = pa.RecordBatch.from_pydict({"id": pa.array([1, 2], pa.int32()), "n": pa.array([3, None], pa.int8())})
    keys, values = enc.encode_batch(batch, "u", INFO, {})
    for row, value in zip(batch.to_pylist(), values, strict=True):
        assert value == enc.encode_value(ChangeEvent("u", None, row, ts_ms=TS), INFO)
    assert keys == [enc.encode_key({"id": 1}), enc.encode_key({"id": 2})]


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("seed", range(8))
def test_batch_decoding_gives_back_the_rows(seed: int) -> None:
    from copyjob.connectors.kafka.batch_decode import decode_upserts

    rng = random.Random(seed)
    batch = random_batch(rng, rng.choice([1, 9, 300]), null_share=rng.choice([0.0, 0.3, 1.0]))
    enc = Encoder("avro", MemoryTransport()).for_table("shop.public.things", SCHEMA, ("id",))
    _, values = enc.encode_batch(batch, "u", INFO, {"lsn": 1})
    decoded = decode_upserts(values, 10, COLUMNS)
    assert decoded is not None
    rows, ops = decoded
    assert ops.to_pylist() == [ord("u")] * batch.num_rows
    expected = pa.RecordBatch.from_arrays(batch.columns, schema=pa.schema([f.remove_metadata() for f in
                                                                           batch.schema]))
    assert rows.to_pylist() == expected.to_pylist()


def test_batch_decoding_refuses_what_is_not_an_upsert() -> None:
    from copyjob.connectors.kafka.batch_decode import decode_upserts

    bus = MemoryTransport()
    enc = Encoder("avro", bus).for_table("shop.public.things", SCHEMA, ("id",))
    row = random_batch(random.Random(1), 1, null_share=0.0).to_pylist()[0]
    upsert = enc.encode_value(ChangeEvent("c", None, row), INFO)
    delete = enc.encode_value(ChangeEvent("d", row, None), INFO)
    update = enc.encode_value(ChangeEvent("u", row, row), INFO)
    assert decode_upserts([upsert, upsert], 10, COLUMNS) is not None
    assert decode_upserts([upsert, delete], 10, COLUMNS) is None
    assert decode_upserts([update], 10, COLUMNS) is None


def test_batch_decoding_refuses_truncated_or_padded_messages() -> None:
    from copyjob.connectors.kafka.batch_decode import decode_upserts

    enc = Encoder("avro", MemoryTransport()).for_table("shop.public.things", SCHEMA, ("id",))
    _, values = enc.encode_batch(random_batch(random.Random(3), 4), "r", INFO, {"watermark": None})
    assert decode_upserts(values, 10, COLUMNS) is not None
    assert decode_upserts([values[0][:-1], *values[1:]], 10, COLUMNS) is None
    assert decode_upserts([values[0] + b"\x00", *values[1:]], 10, COLUMNS) is None


def test_wide_decimals_and_values_python_cannot_hold_decode_exactly() -> None:
    """Every digit of a 60-digit decimal (Python's default decimal context keeps 28), and the dates and
    timestamps Python has no value for (infinity, BC), on the batch path and message by message."""
    from copyjob.connectors.kafka.batch_decode import decode_upserts

    from copyjob.core import temporal

    columns = (Column("id", LogicalType("int64"), nullable=False),
               Column("wide", LogicalType("decimal", 60, 20)), Column("d", LogicalType("date")),
               Column("ts", LogicalType("timestamptz")))
    schema = TableSchema(TableName("odd", "public"), columns, primary_key=("id",))
    wide = decimal.Decimal("1234567890123456789012345678901234567890.12345678901234567890")
    batch = pa.RecordBatch.from_arrays([
        pa.array([1, 2]), pa.array([wide, -wide], pa.decimal256(60, 20)),
        pa.array([temporal.DATE_INFINITY, -735_160], pa.date32()),
        pa.array([-temporal.TIMESTAMP_INFINITY, 0], pa.timestamp("us", tz="UTC"))], schema=schema.arrow_schema())
    bus = MemoryTransport()
    enc = Encoder("avro", bus).for_table("shop.public.odd", schema, ("id",))
    _, values = enc.encode_batch(batch, "r", INFO, {"lsn": 1})
    decoded = decode_upserts(values, 10, columns)
    assert decoded is not None
    assert decoded[0].column("wide").to_pylist() == [wide, -wide]
    after = [Decoder(bus).decode(v).after for v in values]
    assert [a["wide"] for a in after if a] == [wide, -wide]
    rows = pa.RecordBatch.from_pylist([a for a in after if a], schema=schema.arrow_schema())
    assert rows.column("d").equals(batch.column("d")) and rows.column("ts").equals(batch.column("ts"))
