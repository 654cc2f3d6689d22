"""Two apply members meeting a table's new epoch at the same moment empty it once (copyjob.apply.epochs).

Each member holds one of the topic's two partitions (a consumer group's share, on the in-memory transport) and
its own connection to a real destination. Both decide to start the table over before either empties it: each
member's first emptying load waits at a barrier until the other's arrives. Afterwards the table holds every
row of the new epoch exactly once, whichever member emptied it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from copyjob.apply.kafka_apply import Applier, ApplyTable
from copyjob.apply.topic_sink import publish_batch
from copyjob.connectors import open_destination, open_source
from copyjob.connectors.kafka.codec import Encoder, SourceInfo
from copyjob.connectors.kafka.memory import MemoryTransport

from copyjob.core.changes import ChangeBatch, ChangeEvent
from copyjob.core.contracts import Destination, LoadSession, UpdateMethod
from copyjob.core.plan import TableJob
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.transport import Record
from copyjob.core.urls import parse_url

SCHEMA = TableSchema(TableName("items"), (Column("id", LogicalType("int64"), nullable=False),
                                         Column("v", LogicalType("string"))), ("id",))
INFO = SourceInfo("sqlite", "src", "main", "items")
TOPIC = "p.main.items"


class Share:
    """The in-memory transport as one consumer-group member sees it: only its partitions."""

    def __init__(self, bus: MemoryTransport, partitions: set[int]) -> None:
        self.bus, self.partitions = bus, partitions

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    def subscribe(self, topics: Sequence[str], group_id: str, start_at: Callable[[str, int], int | None],
                  on_revoke: Callable[[], None] | None = None) -> ShareSubscription:
        return ShareSubscription(self.bus, {(t, p): start_at(t, p) or 0 for t in topics for p in self.partitions})


class ShareSubscription:
    def __init__(self, bus: MemoryTransport, positions: dict[tuple[str, int], int]) -> None:
        self.bus, self.positions = bus, positions

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out: list[Record] = []
        for (topic, p), pos in self.positions.items():
            records = self.bus.topics[topic][p][pos:pos + max_records - len(out)]
            out.extend(records)
            self.positions[(topic, p)] = pos + len(records)
        return out

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        pass

    def assignment(self) -> list[tuple[str, int]]:
        return list(self.positions)

    def close(self) -> None:
        pass


class Meeting:
    """A member's destination whose first emptying load waits for the other member's (a two-party barrier)."""

    def __init__(self, destination: Destination, barrier: threading.Barrier) -> None:
        self.destination, self.barrier, self.met = destination, barrier, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.destination, name)

    def begin_load(self, schema: TableSchema, method: UpdateMethod, key: Sequence[str], truncate: bool = False,
                   deferred_key: Sequence[str] = ()) -> LoadSession:
        if truncate and not self.met:
            self.met = True
            self.barrier.wait()
        return self.destination.begin_load(schema, method, key, truncate, deferred_key)


def publish(bus: MemoryTransport, epoch: str, ids: range, value: str) -> None:
    encoder = Encoder("avro", bus)
    encoder.epochs[TOPIC] = epoch
    publisher = bus.publisher()
    events = [ChangeEvent("r", None, {"id": i, "v": value}) for i in ids]
    publish_batch(encoder, publisher, TOPIC, ChangeBatch(SCHEMA.table, SCHEMA, events), INFO, ("id",))
    publisher.flush()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def destination_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dst.db'}"
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return str(request.getfixturevalue("mariadb_url"))


@pytest.mark.parametrize("method", ["append", "merge"])
def test_two_members_meeting_a_new_epoch_empty_the_table_once(destination_url: str, method: UpdateMethod) -> None:
    bus = MemoryTransport(partitions=2)
    bus.ensure_topics({TOPIC: True})
    publish(bus, "", range(1, 41), "old")
    barrier = threading.Barrier(2, timeout=120)
    members = []
    for partition in (0, 1):
        job = TableJob(name="items", target_name="items", mode="incremental", update_method=method)
        table = ApplyTable(table=job, topic=TOPIC, dlq="p.items.dlq")
        destination = Meeting(open_destination(parse_url(destination_url)), barrier)
        members.append(Applier("job", [table], Share(bus, {partition}), destination,
                               f"run{partition}", "g", "p"))
    try:
        for member in members:  # the old epoch, each its share
            member.step()
            member.flush()
        assert count(destination_url) == 40
        publish(bus, "20260101T000000.000001", range(1, 41), "new")  # the capture side published it again
        for member in members:  # both writer threads at once: they meet at the barrier
            member.step()
        for member in members:
            member.flush()
    finally:
        for member in members:
            member.close()
    assert rows(destination_url) == [(i, "new") for i in range(1, 41)]


def count(url: str) -> int:
    return len(rows(url))


def rows(url: str) -> list[tuple[Any, ...]]:
    source = open_source(parse_url(url))
    try:
        found = [(r["id"], r["v"]) for batch in source.read(SCHEMA) for r in batch.to_pylist()]
    finally:
        source.close()
    return sorted(found)
