"""The transport between the capture side and the apply side, when they run apart.

``transport: direct`` (the default) needs none of this: one process reads and writes (see copyjob.runner).
``transport: kafka`` puts topics in between; this module is the small interface the Kafka pipeline is written
against, and :class:`MemoryTransport`, an in-process implementation for fast tests of the pipeline's logic
(the Kafka implementation is ``connectors.kafka.transport.KafkaTransport``).

- publish side: :meth:`Publisher.publish` queues a message, :meth:`Publisher.flush` returns once every queued
  message is acknowledged (and raises otherwise): the capture saves its source position only after it.
- consume side: :meth:`Transport.subscribe` joins a consumer group; each assigned partition starts at the offset
  ``start_at(topic, partition)`` returns (the offset stored in the destination), or at its beginning.
  :meth:`Subscription.poll` returns records in partition order, never blocking longer than its timeout.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

Headers = Sequence[tuple[str, bytes]]
StartAt = Callable[[str, int], int | None]


class Record(NamedTuple):
    """One consumed message. A named tuple, because one is built per message on the apply side's hot path
    (half the cost of a frozen dataclass)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int = 0


class Publisher(Protocol):
    def publish(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()) -> None: ...

    def publish_many(self, topic: str, keys: Sequence[bytes | None], values: Sequence[bytes | None],
                     headers: Headers = ()) -> None:
        """``publish`` of each (key, value) pair in order, with the same headers (the bulk path)."""

    def flush(self) -> None:
        """Block until every published message is acknowledged; raise ConnectionFailed when one was not."""


class Subscription(Protocol):
    def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Record ``next offset`` per partition in the group (for monitoring; the destination is the truth)."""

    def assignment(self) -> list[tuple[str, int]]: ...

    def close(self) -> None: ...


class SchemaStore(Protocol):
    def register(self, subject: str, schema_json: str) -> bytes: ...

    def by_fingerprint(self, fp: int) -> str | None: ...

    def by_id(self, schema_id: int) -> str | None: ...


class Transport(Protocol):
    @property
    def schemas(self) -> SchemaStore:
        """Where decoders find writers' schemas."""

    @property
    def registrar(self) -> SchemaStore:
        """Where encoders register schemas."""

    def ensure_topics(self, topics: Mapping[str, bool]) -> None:
        """Create missing topics (``name → compacted``)."""

    def end_offsets(self, topic: str) -> dict[int, int]: ...

    def publisher(self) -> Publisher: ...

    def subscribe(self, topics: Sequence[str], group_id: str, start_at: StartAt,
                  on_revoke: Callable[[], None] | None = None) -> Subscription:
        """A group member. ``start_at`` gives each assigned partition's first offset; ``on_revoke`` runs
        before partitions are taken away (the member finishes what it is writing)."""

    def close(self) -> None: ...


# ---------------------------------------------------------------- in memory


class MemoryTransport:
    """Topics as lists in this process; every subscriber of a group gets every partition (one member)."""

    def __init__(self, partitions: int = 3) -> None:
        from connectors.kafka import avro

        self._avro = avro
        self.partitions = partitions
        self.topics: dict[str, list[list[Record]]] = {}
        self.compacted: dict[str, bool] = {}
        self.committed: dict[str, dict[tuple[str, int], int]] = {}
        self._schemas: dict[int, str] = {}
        self._lock = threading.Lock()
        self.schemas = self.registrar = self

    def register(self, subject: str, schema_json: str) -> bytes:
        fp = self._avro.fingerprint(schema_json)
        self._schemas[fp] = schema_json
        return self._avro.single_object_header(fp)

    def by_fingerprint(self, fp: int) -> str | None:
        return self._schemas.get(fp)

    def by_id(self, schema_id: int) -> str | None:
        return None

    def ensure_topics(self, topics: Mapping[str, bool]) -> None:
        for name, compact in topics.items():
            self.topics.setdefault(name, [[] for _ in range(self.partitions)])
            self.compacted.setdefault(name, compact)

    def end_offsets(self, topic: str) -> dict[int, int]:
        return {p: len(records) for p, records in enumerate(self.topics.get(topic, []))}

    def publisher(self) -> Publisher:
        return _MemoryPublisher(self)

    def append(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        parts = self.topics.setdefault(topic, [[] for _ in range(self.partitions)])
        p = zlib.crc32(key) % len(parts) if key else sum(len(x) for x in parts) % len(parts)
        with self._lock:
            parts[p].append(Record(topic, p, len(parts[p]), key, value, tuple(headers)))

    def subscribe(self, topics: Sequence[str], group_id: str, start_at: StartAt,
                  on_revoke: Callable[[], None] | None = None) -> Subscription:
        return _MemorySubscription(self, list(topics), group_id, start_at)

    def close(self) -> None:
        pass


class _MemoryPublisher:
    def __init__(self, bus: MemoryTransport) -> None:
        self._bus = bus
        self._pending: list[tuple[str, bytes | None, bytes | None, Headers]] = []

    def publish(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()) -> None:
        self._pending.append((topic, key, value, headers))

    def publish_many(self, topic: str, keys: Sequence[bytes | None], values: Sequence[bytes | None],
                     headers: Headers = ()) -> None:
        self._pending.extend((topic, k, v, headers) for k, v in zip(keys, values, strict=True))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for item in pending:
            self._bus.append(*item)


class _MemorySubscription:
    def __init__(self, bus: MemoryTransport, topics: list[str], group: str, start_at: StartAt) -> None:
        self._bus = bus
        self._group = group
        self._positions = {(t, p): start_at(t, p) or 0 for t in topics
                           for p in range(len(bus.topics.get(t, [])))}

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out: list[Record] = []
        for (topic, p), pos in self._positions.items():
            records = self._bus.topics[topic][p][pos:pos + max_records - len(out)]
            out.extend(records)
            self._positions[(topic, p)] = pos + len(records)
        return out

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self._bus.committed.setdefault(self._group, {}).update(offsets)

    def assignment(self) -> list[tuple[str, int]]:
        return list(self._positions)

    def close(self) -> None:
        pass
