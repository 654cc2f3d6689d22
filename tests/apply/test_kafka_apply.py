"""The apply side's logic on the in-memory transport (no broker): fold per key, deletes with tombstones,
markers per partition committed with the data, restart from the markers, and dead letters isolated."""

from __future__ import annotations

from pathlib import Path

from copyjob.apply.kafka_apply import Applier, ApplyTable
from copyjob.apply.topic_sink import publish_batch
from copyjob.connectors.kafka.codec import Encoder, SourceInfo
from copyjob.connectors.kafka.memory import MemoryTransport
from copyjob.connectors.sqlite import SqliteDestination

from copyjob.core.changes import ChangeBatch, ChangeEvent
from copyjob.core.contracts import UpdateMethod
from copyjob.core.plan import TableJob
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url
from tests.helpers import sqlite_rows, sqlite_script

SCHEMA = TableSchema(TableName("items"), (Column("id", LogicalType("int64"), nullable=False),
                                         Column("v", LogicalType("string"))), ("id",))
INFO = SourceInfo("sqlite", "src", "main", "items")
TOPIC = "p.main.items"


def table(method: UpdateMethod = "merge") -> ApplyTable:
    job = TableJob(name="items", target_name="items", mode="incremental", update_method=method)
    return ApplyTable(table=job, topic=TOPIC, dlq="p.items.dlq")


def publish(bus: MemoryTransport, events: list[ChangeEvent]) -> None:
    publisher = bus.publisher()
    publish_batch(Encoder("avro", bus), publisher, TOPIC, ChangeBatch(SCHEMA.table, SCHEMA, events), INFO, ("id",))
    publisher.flush()


def applier(bus: MemoryTransport, db: Path, t: ApplyTable) -> Applier:
    destination = SqliteDestination(parse_url(f"sqlite:///{db}"))
    return Applier("job", [t], bus, destination, "run1", "g", "p")


def test_fold_deletes_markers_and_restart(tmp_path: Path) -> None:
    bus = MemoryTransport(partitions=2)
    bus.ensure_topics({TOPIC: True})
    publish(bus, [ChangeEvent("c", None, {"id": i, "v": "a"}) for i in range(1, 11)]
            + [ChangeEvent("u", None, {"id": 3, "v": "b"}), ChangeEvent("d", {"id": 4, "v": "a"}, None)])
    assert sum(bus.end_offsets(TOPIC).values()) == 13  # 12 events + 1 tombstone
    db = tmp_path / "dst.db"
    a = applier(bus, db, table())
    assert a.step() == 13
    a.flush()  # the writer thread has applied what step() polled
    assert sqlite_rows(db, "SELECT id, v FROM items WHERE id IN (3, 4)") == [(3, "b")]
    assert sqlite_rows(db, "SELECT count(*) FROM items") == [(9,)]
    ends = {(TOPIC, p): o for p, o in bus.end_offsets(TOPIC).items()}
    assert a.caught_up(ends)
    markers = dict(sqlite_rows(db, 'SELECT "table", "state" FROM _copyjob_state'))
    assert set(markers) == {"items#0", "items#1"}
    # a new member starts where the destination stands: nothing is applied twice
    publish(bus, [ChangeEvent("u", None, {"id": 5, "v": "z"})])
    b = applier(bus, db, table())
    assert b.step() == 1
    b.flush()  # the writer thread has applied what step() polled
    assert sqlite_rows(db, "SELECT v FROM items WHERE id = 5") == [("z",)]


def test_a_bad_event_goes_to_the_dead_letter_topic_and_the_rest_applies(tmp_path: Path) -> None:
    bus = MemoryTransport(partitions=1)
    bus.ensure_topics({TOPIC: True})
    events = [ChangeEvent("c", None, {"id": i, "v": "ok"}) for i in range(1, 9)]
    events[5] = ChangeEvent("c", None, {"id": 6, "v": "bad"})
    publish(bus, events)
    db = tmp_path / "dst.db"
    sqlite_script(db, "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT CHECK (v <> 'bad'))")
    t = table()
    a = applier(bus, db, t)
    a.step()
    a.flush()  # the writer thread has applied what step() polled
    assert t.stats.dlq == 1 and t.stats.last_error
    assert sqlite_rows(db, "SELECT count(*) FROM items") == [(7,)]
    (dead,) = bus.topics["p.items.dlq"][0]
    assert dict(dead.headers)["copyjob.offset"] == b"5"
    assert a.caught_up({(TOPIC, 0): 8})
