"""The whole-batch encoding of change events (connectors/kafka/change_encode.py) against the event-by-event
encoder: random batches of every logical type and every op, with NULLs, unchanged TOASTed values, missing
columns and varied positions, must give the same keys and values byte for byte, in avro, json and debezium."""

from __future__ import annotations

import datetime as dt
import decimal
import random
from typing import Any

import pytest
from copyjob.apply.topic_sink import publish_batch
from copyjob.connectors.kafka import codec
from copyjob.connectors.kafka.change_encode import encode_changes
from copyjob.connectors.kafka.codec import Encoder, SourceInfo
from copyjob.connectors.kafka.debezium import DebeziumOptions
from copyjob.connectors.kafka.memory import MemoryTransport

from copyjob.core.changes import UNCHANGED_TOAST, ChangeBatch, ChangeEvent, ColumnarInserts
from copyjob.core.errors import DataError
from copyjob.core.schema import Column, LogicalType, TableSchema
from tests.connectors.test_kafka_batch import COLUMNS, INFO, SCHEMA, TS, random_batch

OPS = ("c", "u", "d", "r", "t")


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "now_ms", lambda: TS)
    monkeypatch.setattr("copyjob.apply.topic_sink.now_ms", lambda: TS)
    monkeypatch.setattr("copyjob.connectors.kafka.debezium._now_ms", lambda: TS)


def random_events(rng: random.Random, n: int) -> list[ChangeEvent]:
    rows = random_batch(rng, 2 * n, null_share=rng.choice([0.0, 0.2, 1.0])).to_pylist()
    ops = rng.choice([["c"], ["u"], list(OPS)])
    events = []
    for i in range(n):
        op = rng.choice(ops)
        before: dict[str, Any] | None = rows[2 * i] if op in ("u", "d") and rng.random() < 0.8 else None
        after: dict[str, Any] | None = rows[2 * i + 1] if op in ("c", "u", "r") else None
        if op == "u" and after is not None and rng.random() < 0.3:
            after = {**after, "name": UNCHANGED_TOAST}
        if after is not None and rng.random() < 0.1:
            after = {k: v for k, v in after.items() if k != "doc"}  # a column the image does not carry
        if op == "d" and before is None:
            before = {"id": rows[2 * i]["id"]}  # replica identity default: the key only
        position: dict[str, Any] = rng.choice([
            {"lsn": rng.randint(0, 2**40), "seq": i},
            {"lsn": 2**70, "seq": i},
            {"file": "mysql-bin.000003", "pos": rng.randint(4, 10**6), "row": i},
            {},
        ])
        ts = rng.choice([0, TS - 5000, rng.randint(1, 2**41)])
        events.append(ChangeEvent(op, before, after, position, ts, snapshot=op == "r"))  # type: ignore[arg-type]
    return events


def _expected(enc: codec.TableEncoder, events: list[ChangeEvent], info: SourceInfo) -> tuple[list[Any], list[Any]]:
    keys = [enc.encode_key({} if e.op == "t" else e.row) for e in events]
    values = [enc.encode_value(e, info) for e in events]
    return keys, values


@pytest.mark.parametrize("fmt", ["avro", "json"])
@pytest.mark.parametrize("seed", range(16))
def test_change_batches_are_byte_identical_to_event_by_event(fmt: str, seed: int) -> None:
    rng = random.Random(seed)
    events = random_events(rng, rng.choice([1, 5, 120]))
    keyed = rng.random() < 0.8
    schema = SCHEMA if keyed else TableSchema(SCHEMA.table, COLUMNS, ())
    info = rng.choice([INFO, SourceInfo("mysql", "shop", None, "things")])
    enc = Encoder(fmt, MemoryTransport()).for_table("shop.public.things", schema, ("id",) if keyed else ())
    encoded = encode_changes(enc, events, info, TS)
    assert encoded is not None
    expected = _expected(enc, events, info)
    for i, e in enumerate(events):
        assert encoded[0][i] == expected[0][i], (e, encoded[0][i], expected[0][i])
        assert encoded[1][i] == expected[1][i], (e, encoded[1][i], expected[1][i])


def test_a_value_arrow_does_not_take_falls_back_to_the_event_path() -> None:
    enc = Encoder("avro", MemoryTransport()).for_table("shop.public.things", SCHEMA, ("id",))
    bad = ChangeEvent("c", None, {"id": 1, "amount": "not a number"})
    assert encode_changes(enc, [bad], INFO, TS) is None


class Recorder:
    """A publisher that notes every message in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []

    def publish(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = ()) -> None:
        self.messages.append((key, value, tuple(headers)))

    def publish_many(self, topic: str, keys: Any, values: Any, headers: Any = ()) -> None:
        for key, value in zip(keys, values, strict=True):
            self.publish(topic, key, value, headers)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("fmt", ["avro", "json", "debezium"])
def test_publish_batch_sends_the_same_messages_as_event_by_event(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tombstones after deletes, the truncate and unchanged-value headers, in the events' order."""
    events = random_events(random.Random(7), 300)
    batch = ChangeBatch(SCHEMA.table, SCHEMA, events)
    encoder = Encoder(fmt, MemoryTransport())
    fast, slow = Recorder(), Recorder()
    publish_batch(encoder, fast, "shop.public.things", batch, INFO, ("id",))
    monkeypatch.setattr("copyjob.apply.topic_sink.encode_changes", lambda *args: None)
    publish_batch(encoder, slow, "shop.public.things", batch, INFO, ("id",))
    assert fast.messages == slow.messages
    assert any(value is None for _, value, _ in fast.messages)  # tombstones
    assert {name for *_, headers in fast.messages for name, _ in headers} >= {"copyjob.op", "copyjob.unchanged"}


def test_json_images_in_another_column_order_keep_their_own_order() -> None:
    """The column-wise JSON path joins a batch's images by the first image's column order; an image whose
    columns come in another order (or another set) is written in its own order, as the event path does."""
    enc = Encoder("json", MemoryTransport()).for_table("shop.public.things", SCHEMA, ("id",))
    first = {"id": 1, "name": "a"}
    events = [ChangeEvent("c", None, first, {"lsn": 5, "seq": 0}, TS),
              ChangeEvent("c", None, {"name": "b", "id": 2}, {"lsn": 5, "seq": 1}, TS),
              ChangeEvent("u", {"id": 1}, {"id": 1}, {"lsn": 6, "seq": 0}, TS)]
    encoded = encode_changes(enc, events, INFO, TS)
    assert encoded is not None
    assert encoded == _expected(enc, events, INFO)
    assert b'"after": {"name": "b", "id": 2}' in encoded[1][1]


# ---------------------------------------------------------------- format: debezium


DBZ_COLUMNS = (*COLUMNS,
               Column("ts3", LogicalType("timestamp"), native_type="timestamp(3) without time zone"),
               Column("tm3", LogicalType("time"), native_type="time(3) without time zone"),
               Column("tz0", LogicalType("timestamptz"), native_type="timestamp(0) with time zone"))
DBZ_SCHEMA = TableSchema(SCHEMA.table, DBZ_COLUMNS, ("id",))
_PLUS_TWO = dt.timezone(dt.timedelta(hours=2))


def _odd_value(rng: random.Random, column: str, value: Any) -> Any:
    """A value of another Python type or an edge the column's converter handles (or Arrow would not take)."""
    odd: dict[str, list[Any]] = {
        "amount": [decimal.Decimal("1.005"), decimal.Decimal("NaN"), decimal.Decimal("-0.00"), decimal.Decimal("7"),
                   decimal.Decimal("1E+3"), 12, "3.14"],
        "wide": [decimal.Decimal("0.000001"), decimal.Decimal(10**24)],
        "free": ["-0.000", "1E+3", decimal.Decimal("2.5"), "NaN", 42],
        "f64": [float("nan"), float("-inf"), 3, -0.0],
        "f32": [float("inf"), 2],
        "i32": [True, False],
        "ok": [1, 0],
        "name": ['quote " \\ é \n \u2028 😀', ""],
        "blob": [bytearray(b"\x00\xff"), b""],
        "day": [19724, dt.date(1, 1, 1), dt.date(9999, 12, 31)],
        "at": [dt.time(23, 59, 59, 999999), 86_399_999_999, dt.timedelta(hours=-1, microseconds=5),
               dt.time(1, 2, 3, tzinfo=dt.UTC)],
        "local ts": [dt.datetime(2024, 5, 6, 7, 8, 9, 500, tzinfo=_PLUS_TWO), 2**62, dt.datetime(1, 1, 1)],
        "paid_at": [dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=_PLUS_TWO), dt.datetime(2024, 5, 6, 7, 8, 9),
                    dt.datetime(1, 1, 1, tzinfo=dt.UTC), 2**62, -(2**62)],
        "ts3": [dt.datetime(2024, 1, 2, 3, 4, 5, 123456)],
        "tm3": [dt.time(3, 4, 5, 678901)],
        "tz0": [dt.datetime(2024, 1, 2, 3, 4, 5, 999999, tzinfo=dt.UTC)],
    }
    return rng.choice(odd[column]) if column in odd else value


def _debezium_row(rng: random.Random, row: dict[str, Any] | None, odd: float) -> dict[str, Any] | None:
    if row is None or row is UNCHANGED_TOAST:
        return row
    out = dict(row)
    for name in ("ts3", "tz0"):
        if "id" in out and rng.random() < 0.8:
            moment = dt.datetime(2024, 1, 1) + dt.timedelta(microseconds=rng.randint(-2**50, 2**50))
            out[name] = moment.replace(tzinfo=dt.UTC) if name == "tz0" else moment
    if "id" in out and rng.random() < 0.8:
        out["tm3"] = dt.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999))
    for name in list(out):
        if out[name] is not UNCHANGED_TOAST and rng.random() < odd:
            out[name] = _odd_value(rng, name, out[name])
    return out


def _debezium_events(rng: random.Random, n: int) -> list[ChangeEvent]:
    odd = rng.choice([0.0, 0.02, 0.3])
    events = []
    for e in random_events(rng, n):
        position = dict(e.position)
        if "file" in position and rng.random() < 0.5:
            position["gtid"] = rng.choice([f"0-1-{rng.randint(1, 99)}", None])
        events.append(ChangeEvent(e.op, _debezium_row(rng, e.before, odd), _debezium_row(rng, e.after, odd),  # type: ignore[arg-type]
                                  position, e.ts_ms, e.snapshot))
    return events


def _debezium_expected(enc: codec.TableEncoder, events: list[ChangeEvent],
                       info: SourceInfo) -> tuple[list[Any], list[Any]]:
    """The event path: :meth:`DebeziumTable.encode_key` / ``encode_value``, as publish_batch calls them."""
    keys = [enc.encode_key({} if e.op == "t" else e.row, truncate=e.op == "t") for e in events]
    return keys, [enc.encode_value(e, info) for e in events]


@pytest.mark.parametrize("seed", range(40))
def test_debezium_change_batches_are_byte_identical_to_event_by_event(seed: int) -> None:
    """Every logical type, each decimal_handling, schemas on and off, PostgreSQL, MySQL, MariaDB and other
    source blocks, every op, NULLs, unchanged TOASTed values, missing columns, odd Python types."""
    rng = random.Random(seed)
    events = _debezium_events(rng, rng.choice([1, 5, 120]))
    key = rng.choice([("id",), ("id", "i16"), ()])
    options = DebeziumOptions(name=rng.choice(["shop", "prefixé"]),
                              connector=rng.choice(["postgresql", "mysql", "mariadb", "sqlserver"]),
                              schemas=rng.random() < 0.6,
                              decimal_handling=rng.choice(["precise", "string", "double"]))
    info = rng.choice([INFO, SourceInfo("mysql", "shop", None, "things")])
    enc = Encoder("debezium", MemoryTransport(), options).for_table("shop.public.things",
                                                                   TableSchema(SCHEMA.table, DBZ_COLUMNS, key), key)
    encoded = encode_changes(enc, events, info, TS)
    assert encoded is not None
    expected = _debezium_expected(enc, events, info)
    for i, e in enumerate(events):
        assert encoded[0][i] == expected[0][i], (e, encoded[0][i], expected[0][i])
        assert encoded[1][i] == expected[1][i], (e, encoded[1][i], expected[1][i])


def test_debezium_values_a_converter_refuses_fall_back_to_the_event_path() -> None:
    """The batch declines; the event path then names the table and column (DataError)."""
    enc = Encoder("debezium", MemoryTransport(), DebeziumOptions()).for_table("shop.public.things", DBZ_SCHEMA,
                                                                              ("id",))
    bad = [ChangeEvent("c", None, {"id": 1, "day": "yesterday"}, {"lsn": 1, "seq": 0}, TS)]
    assert encode_changes(enc, bad, INFO, TS) is None
    with pytest.raises(DataError, match="column day"):
        publish_batch(Encoder("debezium", MemoryTransport()), Recorder(), "shop.public.things",
                      ChangeBatch(DBZ_SCHEMA.table, DBZ_SCHEMA, bad), INFO, ("id",))


@pytest.mark.parametrize("seed", range(8))
def test_inserts_held_column_wise_are_byte_identical_to_event_by_event(seed: int) -> None:
    """ColumnarInserts (what a log reader hands an avro sink) encode to the bytes of their events."""
    rng = random.Random(seed)
    n = rng.choice([1, 7, 300])
    rows = random_batch(rng, n, null_share=rng.choice([0.0, 0.2, 1.0]))
    positions = {"lsn": [rng.randint(0, 2**40)] * n, "seq": list(range(n))}
    ts_ms = [rng.choice([0, TS - 5000]) for _ in range(n)]
    run = ColumnarInserts(rows, positions, ts_ms)
    keyed = rng.random() < 0.8
    schema = SCHEMA if keyed else TableSchema(SCHEMA.table, COLUMNS, ())
    enc = Encoder("avro", MemoryTransport()).for_table("shop.public.things", schema, ("id",) if keyed else ())
    encoded = encode_changes(enc, run, INFO, TS)
    assert encoded == _expected(enc, run.events(), INFO)
    assert encoded == encode_changes(enc, run.events(), INFO, TS)


def test_publish_batch_of_inserts_held_column_wise_sends_what_their_events_send() -> None:
    rows = random_batch(random.Random(3), 50, null_share=0.2)
    run = ColumnarInserts(rows, {"lsn": [7] * 50, "seq": list(range(50))}, [TS] * 50)
    encoder = Encoder("avro", MemoryTransport())
    columns, events = Recorder(), Recorder()
    publish_batch(encoder, columns, "shop.public.things", ChangeBatch(SCHEMA.table, SCHEMA, run), INFO, ("id",))
    publish_batch(encoder, events, "shop.public.things", ChangeBatch(SCHEMA.table, SCHEMA, run.events()), INFO,
                  ("id",))
    assert columns.messages == events.messages and len(columns.messages) == 50
