"""Thin wrappers over confluent-kafka (librdkafka): configuration, topic creation, an idempotent producer that
reports failed deliveries, consumers, and the translation of Kafka errors into copyjob's errors."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from copyjob.connectors.kafka.sizes import (
    DEFAULT_MAX_MESSAGE_BYTES,
    check_sizes,
    consumer_config,
    producer_config,
    too_large_for_topic,
    topic_config,
)

from copyjob.core.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    ConnectorError,
    CopyjobError,
    DataError,
    MissingDependency,
)
from copyjob.core.retry import retrying

if TYPE_CHECKING:
    from confluent_kafka import Consumer

ACK_TIMEOUT_S = 60.0
_AUTH_CODES = {"_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "TOPIC_AUTHORIZATION_FAILED",
               "GROUP_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED", "_SSL"}
_TRANSIENT_CODES = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_MSG_TIMED_OUT", "REQUEST_TIMED_OUT",
                    "NOT_LEADER_OR_FOLLOWER", "LEADER_NOT_AVAILABLE", "NOT_COORDINATOR",
                    "COORDINATOR_NOT_AVAILABLE", "COORDINATOR_LOAD_IN_PROGRESS", "_RESOLVE",
                    "NETWORK_EXCEPTION", "_WAIT_COORD", "UNKNOWN_TOPIC_OR_PART", "NOT_CONTROLLER",
                    "BROKER_NOT_AVAILABLE", "THROTTLING_QUOTA_EXCEEDED",
                    "_UNKNOWN_PARTITION"}  # librdkafka's metadata of a known topic while its broker restarts
_FENCED = ("fenced", "not enough brokers", "unable to replicate")
"""A topic creation refused while the brokers restart (KRaft: ``INVALID_REPLICATION_FACTOR`` with "All brokers
are currently fenced"): the same request succeeds once they have registered again."""
ADMIN_ATTEMPTS = 6
"""Tries of an admin call (topic creation, metadata) in all, 2, 4, 8, 10, 10 s apart: a broker restart."""


def kafka_module() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:
        raise MissingDependency("confluent-kafka is not installed: pip install confluent-kafka fastavro") from exc
    return confluent_kafka


def base_config(bootstrap_servers: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka settings: the bootstrap servers, then the job's ``kafka.config`` (which wins)."""
    return {"bootstrap.servers": bootstrap_servers, "log_level": 3, **{k: v for k, v in config.items()}}


def translate(exc: BaseException, what: str) -> CopyjobError:
    """A Kafka error as a copyjob error: authentication terminal, broker trouble retriable."""
    if isinstance(exc, CopyjobError):
        return exc
    err: Any = exc.args[0] if exc.args else None
    name = err.name() if hasattr(err, "name") else ""
    text = err.str() if hasattr(err, "str") else str(exc)
    message = f"kafka: {what}: {text}"
    if name in _AUTH_CODES:
        return AuthenticationFailed(message)
    retriable = name in _TRANSIENT_CODES or bool(getattr(err, "retriable", lambda: False)()) \
        or (name == "INVALID_REPLICATION_FACTOR" and any(m in text.lower() for m in _FENCED))
    if retriable:
        return ConnectionFailed(message)
    return ConnectorError(message)


class Admin:
    """Topic creation and offsets, over an AdminClient. Every call is tried again (``ADMIN_ATTEMPTS``, the one
    retry policy of copyjob.core.retry) while the broker answers with a transient state: not reachable, no
    controller or leader yet, brokers fenced while they restart."""

    def __init__(self, bootstrap_servers: str, config: Mapping[str, Any]) -> None:
        ck = kafka_module()
        from confluent_kafka.admin import AdminClient

        self._ck = ck
        self._conf = base_config(bootstrap_servers, config)
        self._admin = AdminClient(self._conf)

    def existing_topics(self, timeout_s: float = 10.0) -> set[str]:
        return retrying(lambda: self._topics(timeout_s), "kafka: listing topics", attempts=ADMIN_ATTEMPTS)

    def _topics(self, timeout_s: float) -> set[str]:
        try:
            meta = self._admin.list_topics(timeout=timeout_s)
        except self._ck.KafkaException as exc:
            raise translate(exc, "listing topics") from exc
        return set(meta.topics)

    def ensure_topics(self, topics: Mapping[str, bool], partitions: int, replication_factor: int,
                      max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[str]:
        """Create the missing topics (``name → compacted``), taking messages up to ``max_message_bytes``;
        returns those created."""
        created: list[str] = []
        retrying(lambda: self._create(topics, partitions, replication_factor, max_message_bytes, created),
                 "kafka: creating topics", attempts=ADMIN_ATTEMPTS)
        self._wait_for_leaders(created)
        return created

    def _create(self, topics: Mapping[str, bool], partitions: int, replication_factor: int,
                max_message_bytes: int, created: list[str]) -> None:
        """One attempt: the topics missing now, created (added to ``created``; a topic another attempt or
        process created counts as there); raises the first failure after trying them all."""
        from confluent_kafka.admin import NewTopic

        missing = [t for t in topics if t not in self._topics(10.0)]
        if not missing:
            return
        new = [NewTopic(t, num_partitions=1 if t.endswith("._schemas") else partitions,
                        replication_factor=replication_factor,
                        config={"cleanup.policy": "compact" if topics[t] else "delete",
                                **topic_config(max_message_bytes)}) for t in missing]
        failure: CopyjobError | None = None
        for name, future in self._admin.create_topics(new, operation_timeout=30).items():
            try:
                future.result(timeout=60)
                created.append(name)
            except self._ck.KafkaException as exc:
                if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                    continue
                failure = failure or translate(exc, f"creating topic {name}")
        if failure is not None:
            raise failure

    def _wait_for_leaders(self, topics: Sequence[str], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for topic in topics:
            while time.monotonic() < deadline:
                try:
                    meta = self._admin.list_topics(topic, timeout=5).topics.get(topic)
                except self._ck.KafkaException:  # a broker restarting: ask again
                    meta = None
                if meta is not None and meta.error is None and meta.partitions and all(
                        p.leader >= 0 for p in meta.partitions.values()):
                    break
                time.sleep(0.1)

    def partitions(self, topic: str) -> list[int]:
        return retrying(lambda: self._partitions(topic), f"kafka: reading the metadata of {topic}",
                        attempts=ADMIN_ATTEMPTS)

    def _partitions(self, topic: str) -> list[int]:
        try:
            meta = self._admin.list_topics(topic, timeout=10).topics.get(topic)
        except self._ck.KafkaException as exc:
            raise translate(exc, f"reading the metadata of {topic}") from exc
        if meta is None or meta.error is not None:
            return []
        return sorted(meta.partitions)

    def delete_topics(self, topics: Sequence[str]) -> None:
        if topics:
            retrying(lambda: self._delete(topics), "kafka: deleting topics", attempts=ADMIN_ATTEMPTS)

    def _delete(self, topics: Sequence[str]) -> None:
        for name, future in self._admin.delete_topics(list(topics), operation_timeout=30).items():
            try:
                future.result(timeout=60)
            except self._ck.KafkaException as exc:
                if exc.args and exc.args[0].name() == "UNKNOWN_TOPIC_OR_PART":
                    continue
                raise translate(exc, f"deleting topic {name}") from exc


def end_offsets(consumer: Consumer, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """The high watermark of each partition (the offset the next message will get)."""
    return retrying(lambda: _end_offsets(consumer, topic, partitions), f"kafka: reading the end offsets of {topic}",
                    attempts=ADMIN_ATTEMPTS)


def fresh_end_offsets(bootstrap_servers: str, config: Mapping[str, Any], topic: str,
                      partitions: Callable[[], Sequence[int]]) -> dict[int, int]:
    """:func:`end_offsets`, each try on a new consumer: after a broker restart a consumer's metadata can go on
    saying "unknown partition" for as long as one would retry."""
    def once() -> dict[int, int]:
        consumer = open_consumer(bootstrap_servers, config, group_id="copyjob-offsets")
        try:
            return _end_offsets(consumer, topic, partitions())
        finally:
            consumer.close()

    return retrying(once, f"kafka: reading the end offsets of {topic}", attempts=ADMIN_ATTEMPTS)


def _end_offsets(consumer: Consumer, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    return {p: high for p, (_, high) in _watermarks(consumer, topic, partitions).items()}


def _watermarks(consumer: Consumer, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
    ck = kafka_module()
    out = {}
    for p in partitions:
        try:
            low, high = consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10, cached=False)
        except ck.KafkaException as exc:
            raise translate(exc, f"reading the end offsets of {topic}") from exc
        out[p] = (int(low), int(high))
    return out


def group_lag(consumer: Consumer, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int | None, int]]:
    """Per partition, the offset committed by ``consumer``'s group (None: none yet) and the messages it has not
    consumed: the high watermark less the committed offset, or less the log start without one (the apply starts
    from the earliest). Read-only: the consumer never subscribes, so the group is not joined."""
    return retrying(lambda: _group_lag(consumer, topic, partitions), f"kafka: reading the group offsets of {topic}",
                    attempts=ADMIN_ATTEMPTS)


def _group_lag(consumer: Consumer, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int | None, int]]:
    ck = kafka_module()
    marks = _watermarks(consumer, topic, partitions)
    try:
        found = consumer.committed([ck.TopicPartition(topic, p) for p in partitions], timeout=10)
    except ck.KafkaException as exc:
        raise translate(exc, f"reading the group offsets of {topic}") from exc
    committed = {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}
    out: dict[int, tuple[int | None, int]] = {}
    for p, (low, high) in marks.items():
        at = committed.get(p)
        out[p] = (at, max(0, high - (low if at is None else max(at, low))))
    return out


class Producer:
    """An idempotent producer (enable.idempotence, acks=all) that remembers failed deliveries; :meth:`flush`
    waits for every acknowledgement and raises when one failed, so callers save positions only after it.

    Only failed deliveries are reported (``delivery.report.only.error``, one callback for the producer): a
    Python callback per acknowledged message cost about as much as producing it."""

    def __init__(self, bootstrap_servers: str, config: Mapping[str, Any],
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, partitioner: str | None = None) -> None:
        """``partitioner``: librdkafka's (``murmur2_random`` hashes keys as Java's default partitioner does)."""
        ck = kafka_module()
        self._ck = ck
        self.max_message_bytes = max_message_bytes
        # large lz4 batches: a snapshot sends hundreds of thousands of small, similar messages; they fill while
        # a request is in flight, so a short linger (librdkafka's and Kafka 4's default, 5 ms) costs them nothing
        # and a change stream's flush (once per chunk) waits less (measured: 100 messages, flush p50 5.1 → 2.6 ms)
        conf = {"linger.ms": 5, "batch.size": 1_000_000, "batch.num.messages": 100_000,
                "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 512 * 1024, "message.timeout.ms": 120_000,
                **producer_config(max_message_bytes), **base_config(bootstrap_servers, config),
                **({"partitioner": partitioner} if partitioner else {}),
                "enable.idempotence": True, "acks": "all", "delivery.report.only.error": True,
                "on_delivery": self._on_delivery}
        self._producer = ck.Producer(conf)
        self._errors: list[str] = []
        self._too_large: list[DataError] = []
        """Messages a topic refused as too large: nothing will take them, so no retry (sizes.py)."""
        self._lock = threading.Lock()
        self.sent = 0

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            with self._lock:
                if err.code() == self._ck.KafkaError.MSG_SIZE_TOO_LARGE:
                    self._too_large.append(too_large_for_topic(msg.topic(), len(msg) or 0))
                self._errors.append(f"{msg.topic()}: {err.str()}")

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        check_sizes(topic, [key], [value], self.max_message_bytes)
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=list(headers) if headers else None)
                self.sent += 1
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: serve delivery reports, then try again
            except self._ck.KafkaException as exc:
                raise translate(exc, f"producing to {topic}") from exc

    def produce_many(self, topic: str, keys: Sequence[bytes | None], values: Sequence[bytes | None],
                     headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        """:meth:`produce` for many messages: one tight loop, the local queue served only when it is full."""
        check_sizes(topic, keys, values, self.max_message_bytes)
        produce = self._producer.produce
        extra = {"headers": list(headers)} if headers else {}
        try:
            for key, value in zip(keys, values, strict=True):
                try:
                    produce(topic, value, key, **extra)
                except BufferError:
                    self.produce(topic, key, value, headers)  # waits for room
                    self.sent -= 1
            self.sent += len(values)
            self._producer.poll(0)
        except self._ck.KafkaException as exc:
            raise translate(exc, f"producing to {topic}") from exc

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout_s: float = ACK_TIMEOUT_S) -> None:
        """Wait until the broker acknowledged every message produced so far; raise if any failed."""
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
            too_large, self._too_large = self._too_large, []
        if too_large:
            raise too_large[0]
        if errors:
            raise ConnectionFailed(f"kafka: {len(errors)} messages were not acknowledged: {errors[0]}")
        if remaining:
            raise ConnectionFailed(f"kafka: {remaining} messages not acknowledged within {timeout_s:.0f}s "
                                   "(is the broker reachable?)")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._producer.flush(5)


def open_consumer(bootstrap_servers: str, config: Mapping[str, Any], group_id: str,
                  max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, **extra: Any) -> Consumer:
    ck = kafka_module()
    # a bounded prefetch (sizes.consumer_config; 10,000 messages or 4 MiB a partition queued): every message
    # waiting in librdkafka's queue costs a few hundred bytes besides its own (1,000,000 rows applied: peak RSS
    # 750 → 360 MB). A full queue postpones a partition's next fetch by fetch.queue.backoff.ms, 1 s by default:
    # the consumer then drained the queue and waited, the writer idle 60% of the time (94,938 rows/s); 50 ms
    # keeps it fed (189,751/s, same queue)
    conf = {"group.id": group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "enable.partition.eof": False, "session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000, "fetch.wait.max.ms": 50, "isolation.level": "read_committed",
            "queued.max.messages.kbytes": 4096, "queued.min.messages": 10_000, "fetch.queue.backoff.ms": 50,
            **consumer_config(max_message_bytes), **base_config(bootstrap_servers, config), **extra}
    try:
        consumer: Consumer = ck.Consumer(conf)
    except ck.KafkaException as exc:
        raise translate(exc, "creating a consumer") from exc
    return consumer
