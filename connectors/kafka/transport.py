"""The Kafka implementation of copyjob's transport (copyjob/core/transport.py): topics, an idempotent producer and
consumer groups whose partitions start at the offsets the destination holds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from operator import is_not, itemgetter
from typing import Any

from copyjob.connectors.kafka.client import (
    Admin,
    Producer,
    end_offsets,
    fresh_end_offsets,
    group_lag,
    kafka_module,
    open_consumer,
    translate,
)
from copyjob.connectors.kafka.schemas import RegistryClient, Schemas, SchemaTopic, schema_topic
from copyjob.connectors.kafka.sizes import DEFAULT_MAX_MESSAGE_BYTES

from copyjob.core.collector import paused_gc
from copyjob.core.transport import Headers, Record, StartAt

log = logging.getLogger("copyjob.kafka")


class KafkaTransport:
    """``settings`` is the job's ``kafka:`` section (copyjob.jobfile.KafkaSettings)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._servers: str = settings.bootstrap_servers
        self._config: dict[str, Any] = dict(settings.config)
        self._max_message_bytes: int = settings.max_message_bytes  # connectors/kafka/sizes.py
        self.admin = Admin(self._servers, self._config)
        self._producer: Producer | None = None
        topic = SchemaTopic(self._servers, self._config, settings.topic_prefix)
        self._topic = topic
        registry = RegistryClient(settings.schema_registry_url) if settings.schema_registry_url else None
        self.schemas = Schemas(topic, registry)
        # JSON messages name their schema by fingerprint: it goes to the schema topic even with a registry
        # (debezium messages carry their schema inline: nothing is registered for them)
        self.registrar = Schemas(topic, None) if settings.format in ("json", "debezium") else self.schemas

    def ensure_topics(self, topics: Mapping[str, bool]) -> None:
        wanted = {schema_topic(self.settings.topic_prefix): True, **topics}
        created = self.admin.ensure_topics(wanted, self.settings.partitions, self.settings.replication_factor,
                                           self._max_message_bytes)
        for name in created:
            log.info("created topic %s", name)

    def end_offsets(self, topic: str) -> dict[int, int]:
        return fresh_end_offsets(self._servers, self._config, topic, lambda: self.admin.partitions(topic))

    def consumer_lag(self, group_id: str, topics: Sequence[str]) -> dict[tuple[str, int], tuple[int | None, int]]:
        """Per (topic, partition) of the topics that exist, ``group_id``'s committed offset (None: none) and
        the messages it has not consumed yet (:func:`client.group_lag`); read-only, the group is not joined."""
        consumer = open_consumer(self._servers, self._config, group_id=group_id)
        try:
            return {(topic, p): lag for topic in topics
                    for p, lag in group_lag(consumer, topic, self.admin.partitions(topic)).items()}
        finally:
            consumer.close()

    def offsets_for_time(self, topic: str, ts_ms: int) -> dict[int, int]:
        """Per partition, the offset of the first message published after ``ts_ms`` (or the end)."""
        ck = kafka_module()
        consumer = open_consumer(self._servers, self._config, group_id="copyjob-offsets")
        try:
            parts = self.admin.partitions(topic)
            ends = end_offsets(consumer, topic, parts)
            found = consumer.offsets_for_times([ck.TopicPartition(topic, p, ts_ms + 1) for p in parts], timeout=10)
        except ck.KafkaException as exc:
            raise translate(exc, f"looking up offsets of {topic} by time") from exc
        finally:
            consumer.close()
        return {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition]) for tp in found}

    def publisher(self) -> KafkaPublisher:
        if self._producer is None:
            self._producer = Producer(self._servers, self._config, self._max_message_bytes,
                                      getattr(self.settings, "partitioner", None))
            self._topic._producer = self._producer
        return KafkaPublisher(self._producer)

    def subscribe(self, topics: Sequence[str], group_id: str, start_at: StartAt,
                  on_revoke: Callable[[], None] | None = None) -> KafkaSubscription:
        return KafkaSubscription(self._servers, self._config, list(topics), group_id, start_at, on_revoke,
                                 self._max_message_bytes)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None


class KafkaPublisher:
    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    def publish(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()) -> None:
        self._producer.produce(topic, key, value, headers)

    def publish_many(self, topic: str, keys: Sequence[bytes | None], values: Sequence[bytes | None],
                     headers: Headers = ()) -> None:
        self._producer.produce_many(topic, keys, values, headers)

    def flush(self) -> None:
        self._producer.flush()


class KafkaSubscription:
    """A consumer group member. On each assignment, every partition is positioned at ``start_at`` (the offset
    committed with the data in the destination) or at its beginning; group offsets are only for monitoring."""

    def __init__(self, servers: str, config: Mapping[str, Any], topics: list[str], group_id: str,
                 start_at: StartAt, on_revoke: Callable[[], None] | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._ck = kafka_module()
        self._start_at = start_at
        self._before_revoke = on_revoke
        self._consumer = open_consumer(servers, config, group_id, max_message_bytes)
        self._assigned: list[tuple[str, int]] = []
        try:
            self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        except self._ck.KafkaException as exc:
            raise translate(exc, "subscribing") from exc

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            start = self._start_at(tp.topic, tp.partition)
            tp.offset = start if start is not None else self._ck.OFFSET_BEGINNING
        consumer.assign(partitions)
        self._assigned = [(tp.topic, tp.partition) for tp in partitions]
        log.info("assigned %s", ", ".join(f"{t}[{p}]@{tp.offset}" for (t, p), tp in zip(self._assigned,
                                                                                          partitions, strict=True)))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if self._before_revoke is not None:
            self._before_revoke()
        self._assigned = []
        consumer.unassign()

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        try:
            messages = self._consumer.consume(max_records, timeout_s)
        except self._ck.KafkaException as exc:
            raise translate(exc, "consuming") from exc
        if not messages:
            return []
        # a million messages a few seconds: the fields are taken with C-level map() calls, not a Python loop
        # per message, and without cyclic garbage collection meanwhile (records are tuples of bytes and cannot
        # form cycles; the collector would walk every live object again and again, 5x slower at 50,000)
        message = self._ck.Message
        with paused_gc():
            # by identity: KafkaError's == against None raises inside list.count
            errors = list(map(message.error, messages))
            if any(map(is_not, errors, repeat(None))):
                for err in errors:
                    if err is not None:
                        self._consume_error(err)
                messages = [m for m, err in zip(messages, errors, strict=True) if err is None]
            raw_headers = list(map(message.headers, messages))
            headers: Iterable[Headers] = [headers_of(h) if h else () for h in raw_headers] \
                if any(map(is_not, raw_headers, repeat(None))) else repeat((), len(messages))
            # topic, partition and offset are set on every message without an error
            fields = zip(map(message.topic, messages), map(message.partition, messages),
                         map(message.offset, messages), map(message.key, messages), map(message.value, messages),
                         headers, map(_SECOND, map(message.timestamp, messages)), strict=True)
            return list(map(tuple.__new__, repeat(Record), fields))  # Record(*f) without Python-level __new__

    def _consume_error(self, err: Any) -> None:
        if err.code() == self._ck.KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise translate(self._ck.KafkaException(err), "consuming")
        log.log(logging.DEBUG if err.code() == self._ck.KafkaError.UNKNOWN_TOPIC_OR_PART else logging.WARNING,
                "kafka: %s", err.str())

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if not offsets:
            return
        tps = [self._ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=True)
        except self._ck.KafkaException as exc:  # monitoring only: never fails the apply
            log.debug("committing group offsets: %s", exc)

    def assignment(self) -> list[tuple[str, int]]:
        return list(self._assigned)

    def close(self) -> None:
        try:
            self._consumer.close()
        except Exception as exc:  # closing is best effort
            log.debug("closing consumer: %s", exc)


_SECOND = itemgetter(1)


def headers_of(raw: Any) -> tuple[tuple[str, bytes], ...]:
    items = raw.items() if isinstance(raw, dict) else (raw or ())
    return tuple((str(k), v if isinstance(v, bytes) else str(v or "").encode()) for k, v in items)
