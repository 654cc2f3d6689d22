"""``copyjob tail``: the job's events as they are on the topics, decoded (a reader of its own: no consumer
group, nothing committed, so it never disturbs the apply consumers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from copyjob.kafka_pipeline import apply_tables, settings_of
from copyjob.loader import LoadedJob
from copyjob.runs import select_tables


def tail_events(loaded: LoadedJob, table: str | None, *, from_beginning: bool, limit: int | None,
                idle_timeout_s: float | None, stop: threading.Event) -> Iterator[dict[str, Any]]:
    """Decoded events of the job's topics (or one table's), each with its topic, partition and offset."""
    from copyjob.connectors.kafka import open_decoder
    from copyjob.connectors.kafka.client import Admin, kafka_module, open_consumer, translate
    from copyjob.connectors.kafka.transport import headers_of

    ck = kafka_module()
    settings = settings_of(loaded)
    topics = [t.topic for t in apply_tables(loaded, select_tables(loaded, [table] if table else None))]
    decoder = open_decoder(settings.bootstrap_servers, loaded.topic_prefix, settings.schema_registry_url,
                           settings.config)
    admin = Admin(settings.bootstrap_servers, settings.config)
    consumer = open_consumer(settings.bootstrap_servers, settings.config, group_id=f"copyjob-tail-{time.time_ns()}",
                             **{"enable.auto.offset.store": False})
    start = ck.OFFSET_BEGINNING if from_beginning else ck.OFFSET_END
    try:
        consumer.assign([ck.TopicPartition(t, p, start) for t in topics for p in admin.partitions(t)])
        seen = 0
        last = time.monotonic()
        while not stop.is_set() and (limit is None or seen < limit):
            try:
                messages = consumer.consume(500, 0.2)
            except ck.KafkaException as exc:
                raise translate(exc, "tailing") from exc
            if not messages and idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                return
            for m in messages:
                if m.error() is not None:
                    continue
                last = time.monotonic()
                decoded = decoder.decode(m.value(), m.key(), headers_of(m.headers()))
                yield {"topic": m.topic(), "partition": m.partition(), "offset": m.offset(), **decoded.to_json()}
                seen += 1
                if limit is not None and seen >= limit:
                    return
    finally:
        consumer.close()
