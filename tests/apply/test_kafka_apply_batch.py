"""The apply side's column-wise path on the in-memory transport: snapshot batches published with
``encode_batch``/``publish_many`` are decoded, folded and merged without change events; anything else (a
delete, a write that fails) goes event by event."""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from copyjob.apply.kafka_apply import Applier, ApplyTable, last_per_key
from copyjob.apply.topic_sink import publish_batch
from copyjob.connectors.kafka.codec import Encoder, SourceInfo
from copyjob.connectors.kafka.memory import MemoryTransport
from copyjob.connectors.sqlite import SqliteDestination

from copyjob.core.changes import ChangeBatch, ChangeEvent
from copyjob.core.plan import TableJob
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url
from tests.helpers import sqlite_rows, sqlite_script

SCHEMA = TableSchema(TableName("items"), (Column("id", LogicalType("int64"), nullable=False),
                                         Column("v", LogicalType("string")),
                                         Column("amount", LogicalType("decimal", 10, 2))), ("id",))
INFO = SourceInfo("sqlite", "src", "main", "items")
TOPIC = "p.main.items"


def table(**options: Any) -> ApplyTable:
    job = TableJob(name="items", target_name="items", mode="incremental", update_method="merge", **options)
    return ApplyTable(table=job, topic=TOPIC, dlq="p.items.dlq")


def publish_snapshot(bus: MemoryTransport, rows: list[dict[str, Any]], op: str = "r") -> None:
    enc = Encoder("avro", bus).for_table(TOPIC, SCHEMA, ("id",))
    keys, values = enc.encode_batch(pa.RecordBatch.from_pylist(rows, schema=SCHEMA.arrow_schema()), op, INFO, {})
    publisher = bus.publisher()
    publisher.publish_many(TOPIC, keys, values, enc.headers)
    publisher.flush()


def applier(bus: MemoryTransport, db: Path, t: ApplyTable) -> Applier:
    return Applier("job", [t], bus, SqliteDestination(parse_url(f"sqlite:///{db}")), "run1", "g", "p")


@pytest.fixture
def no_event_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("the event-by-event path was used")

    monkeypatch.setattr(Applier, "_event_segments", refuse)


def test_snapshot_rows_are_folded_and_merged_column_wise(tmp_path: Path, no_event_path: None) -> None:
    bus = MemoryTransport(partitions=2)
    bus.ensure_topics({TOPIC: True})
    publish_snapshot(bus, [{"id": i, "v": "a", "amount": None} for i in range(1, 101)])
    publish_snapshot(bus, [{"id": 7, "v": "b", "amount": 1}, {"id": 7, "v": "c", "amount": 2}], op="u")
    db = tmp_path / "dst.db"
    t = table(columns={"v": "label"})
    a = applier(bus, db, t)
    assert a.step() == 102
    a.flush()  # the writer thread has applied what step() polled
    assert sqlite_rows(db, "SELECT count(*) FROM items") == [(100,)]
    assert sqlite_rows(db, "SELECT label, amount FROM items WHERE id = 7") == [("c", 2)]
    assert t.stats.events == 102 and t.stats.upserted == 100  # the three changes of key 7 fold into one
    assert a.caught_up({(TOPIC, p): o for p, o in bus.end_offsets(TOPIC).items()})
    markers = dict(sqlite_rows(db, 'SELECT "table", "state" FROM _copyjob_state'))
    assert set(markers) == {"items#0", "items#1"}


def test_deletes_take_the_event_path(tmp_path: Path) -> None:
    bus = MemoryTransport(partitions=1)
    bus.ensure_topics({TOPIC: True})
    publish_snapshot(bus, [{"id": i, "v": "a", "amount": 1} for i in range(1, 6)])
    publisher = bus.publisher()
    publish_batch(Encoder("avro", bus), publisher, TOPIC, ChangeBatch(SCHEMA.table, SCHEMA, [
        ChangeEvent("d", {"id": 2, "v": "a", "amount": decimal.Decimal("1.00")}, None)]), INFO, ("id",))
    publisher.flush()
    db = tmp_path / "dst.db"
    a = applier(bus, db, table())
    assert a.step() == 7  # 5 rows, a delete and its tombstone
    a.flush()  # the writer thread has applied what step() polled
    assert sqlite_rows(db, "SELECT id FROM items ORDER BY id") == [(1,), (3,), (4,), (5,)]


def test_a_failing_batch_falls_back_and_dead_letters_only_the_bad_row(tmp_path: Path) -> None:
    bus = MemoryTransport(partitions=1)
    bus.ensure_topics({TOPIC: True})
    publish_snapshot(bus, [{"id": i, "v": "bad" if i == 3 else "ok", "amount": 1} for i in range(1, 7)])
    db = tmp_path / "dst.db"
    sqlite_script(db, "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT CHECK (v <> 'bad'), amount NUMERIC)")
    t = table()
    a = applier(bus, db, t)
    a.step()
    a.flush()  # the writer thread has applied what step() polled
    assert t.stats.dlq == 1
    assert sqlite_rows(db, "SELECT id FROM items ORDER BY id") == [(1,), (2,), (4,), (5,), (6,)]
    (dead,) = bus.topics["p.items.dlq"][0]
    assert dict(dead.headers)["copyjob.offset"] == b"2"


def test_last_per_key_keeps_the_last_row_of_each_key_in_order() -> None:
    rows = pa.RecordBatch.from_pydict({"a": [1, 2, 1, 3, 2], "b": ["x", "y", "x", "z", "w"], "n": [0, 1, 2, 3, 4]})
    assert last_per_key(rows, ["a"]).column("n").to_pylist() == [2, 3, 4]
    assert last_per_key(rows, ["a", "b"]).column("n").to_pylist() == [1, 2, 3, 4]
