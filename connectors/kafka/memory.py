"""Topics as lists in this process: the transport for fast tests of the pipeline's logic (no broker)."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Mapping, Sequence

from copyjob.connectors.kafka import avro

from copyjob.core.transport import Headers, Publisher, Record, StartAt, Subscription


class MemoryTransport:
    """Topics as lists in this process; every subscriber of a group gets every partition (one member)."""

    def __init__(self, partitions: int = 3) -> None:
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
