"""The transport between the capture side and the apply side, when they run apart.

``transport: direct`` (the default) needs none of this: one process reads and writes (see copyjob.runner).
``transport: kafka`` puts topics in between; this module is the small interface the Kafka pipeline is written
against
(the Kafka implementation is ``copyjob.connectors.kafka.transport.KafkaTransport``; the in-process one
``copyjob.connectors.kafka.memory.MemoryTransport``).

- publish side: :meth:`Publisher.publish` queues a message, :meth:`Publisher.flush` returns once every queued
  message is acknowledged (and raises otherwise): the capture saves its source position only after it.
- consume side: :meth:`Transport.subscribe` joins a consumer group; each assigned partition starts at the offset
  ``start_at(topic, partition)`` returns (the offset stored in the destination), or at its beginning.
  :meth:`Subscription.poll` returns records in partition order, never blocking longer than its timeout.
"""

from __future__ import annotations

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
