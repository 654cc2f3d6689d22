"""How the apply side polls (apply/kafka_apply.py ``Applier._poll``): an idle writer gets what arrived at once
(a stream's latency), a busy one gets one larger write; records gathered when partitions are revoked are
written before the revoke completes. And the consumer's prefetch stays bounded (connectors/kafka/sizes.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from copyjob.apply import kafka_apply
from copyjob.connectors.kafka.memory import MemoryTransport
from copyjob.connectors.kafka.sizes import consumer_config

from copyjob.core.changes import ChangeEvent
from tests.apply.test_kafka_apply import TOPIC, applier, publish, table
from tests.helpers import sqlite_rows


class Spy:
    """Wraps a subscription and notes the timeout of every poll."""

    def __init__(self, inner: Any, on_poll: Any = None) -> None:
        self.inner, self.on_poll = inner, on_poll
        self.timeouts: list[float] = []

    def poll(self, max_records: int, timeout_s: float) -> Any:
        self.timeouts.append(timeout_s)
        if self.on_poll is not None:
            self.on_poll(len(self.timeouts))
        return self.inner.poll(max_records, timeout_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_idle_writer_gets_what_arrived_without_waiting_for_a_full_poll(tmp_path: Path) -> None:
    bus = MemoryTransport(partitions=1)
    bus.ensure_topics({TOPIC: True})
    a = applier(bus, tmp_path / "dst.db", table())
    spy = a.subscription = Spy(a.subscription)
    publish(bus, [ChangeEvent("c", None, {"id": i, "v": "a"}) for i in range(3)])
    assert a.step() == 3
    # one short poll, then what was already fetched without waiting: nothing was being written
    assert spy.timeouts == [kafka_apply.LATENCY_POLL_S, 0.0]
    a.flush()
    assert sqlite_rows(tmp_path / "dst.db", "SELECT count(*) FROM items") == [(3,)]
    a.close()


def test_what_the_consumer_already_fetched_joins_the_write(tmp_path: Path) -> None:
    bus = MemoryTransport(partitions=1)
    bus.ensure_topics({TOPIC: True})
    a = applier(bus, tmp_path / "dst.db", table())
    publish(bus, [ChangeEvent("c", None, {"id": i, "v": "a"}) for i in range(500)])

    def late(n: int) -> None:
        if n == 2:
            publish(bus, [ChangeEvent("c", None, {"id": -1, "v": "late"})])

    spy = a.subscription = Spy(a.subscription, late)
    assert a.step(timeout_s=0.5) == 501  # one write: the backlog and what came next
    assert spy.timeouts == [kafka_apply.LATENCY_POLL_S, 0.0, 0.0]  # the last found nothing waiting
    a.close()


def test_a_burst_for_an_idle_writer_is_not_held_back(tmp_path: Path) -> None:
    """A source that flushes its log every 200 ms (PostgreSQL with synchronous_commit off) sends a thousand
    changes at once: they go as soon as nothing more is waiting, not after gathering on for the poll's timeout."""
    bus = MemoryTransport(partitions=1)
    bus.ensure_topics({TOPIC: True})
    a = applier(bus, tmp_path / "dst.db", table())
    publish(bus, [ChangeEvent("c", None, {"id": i, "v": "a"}) for i in range(1000)])
    spy = a.subscription = Spy(a.subscription)
    assert a.step(timeout_s=60.0) == 1000
    assert spy.timeouts == [kafka_apply.LATENCY_POLL_S, 0.0]  # no poll waited beyond the first
    a.flush()
    assert sqlite_rows(tmp_path / "dst.db", "SELECT count(*) FROM items") == [(1000,)]
    a.close()


def test_a_busy_writer_gets_one_larger_write_and_a_revoke_writes_what_was_gathered(tmp_path: Path) -> None:
    bus = MemoryTransport(partitions=1)
    bus.ensure_topics({TOPIC: True})
    db = tmp_path / "dst.db"
    a = applier(bus, db, table())
    release = threading.Event()
    a._writer.submit(lambda: release.wait(60))  # the writer is busy with an earlier write
    a._submitted += 1
    writes: list[int] = []
    real = a._apply_all

    def noted(segments: list[kafka_apply.Segment]) -> None:
        writes.append(sum(s.size for s in segments))
        real(segments)

    setattr(a, "_apply_all", noted)  # noqa: B010

    def during(n: int) -> None:
        if n in (1, 2):  # more events arrive while the writer is busy
            publish(bus, [ChangeEvent("c", None, {"id": 10 * n + i, "v": "a"}) for i in range(5)])
        if n == 3:  # the partitions are revoked within a poll: what was gathered is handed over first
            done = threading.Thread(target=a._settle)
            done.start()
            release.set()
            done.join(60)

    a.subscription = Spy(a.subscription, during)
    publish(bus, [ChangeEvent("c", None, {"id": i, "v": "a"}) for i in range(3)])
    a.step(timeout_s=1.0)
    a.flush()
    assert writes[0] == 13  # everything gathered before the revoke, in one write
    assert sqlite_rows(db, "SELECT count(*) FROM items") == [(13,)]
    a.close()


def test_the_consumer_prefetch_is_bounded_yet_takes_the_largest_message() -> None:
    config = consumer_config(16 * 2**20)
    assert config["fetch.max.bytes"] <= 4 * 2**20 and config["max.partition.fetch.bytes"] <= 2**20
    assert config["receive.message.max.bytes"] > 16 * 2**20
