"""Dead letters are sent once: the offsets past a dead-lettered message are committed in the destination even
while its table does not exist, so a restarted ``copyjob apply`` does not send them again. Through the CLI, on
the session's real broker."""

from __future__ import annotations

import os
from itertools import count
from pathlib import Path
from typing import Any

from tests.helpers import copyjob, duckdb_rows, sqlite_exec, sqlite_script, write_job
from tests.services.kafka import KafkaBroker

_ids = count()


def _job(tmp_path: Path, broker: KafkaBroker, **copy: Any) -> tuple[Path, str]:
    prefix = f"dl{os.getpid()}x{next(_ids)}"
    sqlite_script(tmp_path / "shop.db", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);")
    job = write_job(tmp_path / "job.yaml", {
        "job": prefix, "source": {"url": "sqlite:///shop.db"}, "destination": {"url": "duckdb:///wh.duckdb"},
        "copy": {"mode": "full", "update_method": "merge", **copy}, "tables": [{"name": "items"}],
        "transport": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": prefix}})
    return job, prefix


def _messages(broker: KafkaBroker, topic: str) -> int:
    """Messages on ``topic`` (0 while it does not exist)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "copyjob-test-dlq-count"})
    try:
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None:
            return 0
        return sum(high - low for low, high in (consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                                                for p in found.partitions))
    finally:
        consumer.close()


def test_messages_no_table_can_be_made_from_are_dead_lettered_once(tmp_path: Path,
                                                                    kafka_broker: KafkaBroker) -> None:
    """8 messages copyjob cannot decode, on a topic whose destination table does not exist: two apply runs send
    8 dead letters (before: 16, every restart replayed the topic from its beginning)."""
    from confluent_kafka import Producer
    from copyjob.connectors.kafka.client import Admin

    job, prefix = _job(tmp_path, kafka_broker)
    topic = f"{prefix}.main.items"
    Admin(kafka_broker.bootstrap, {}).ensure_topics({topic: True, f"{prefix}._schemas": True}, 3, 1)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for i in range(8):
        producer.produce(topic, key=f'{{"id": {i}}}'.encode(), value=b"\xffnot a change event")
    assert producer.flush(30) == 0
    first = copyjob("apply", job, "--until-caught-up")
    assert first.code == 1 and f"8 to {prefix}.items.dlq" in first.stdout, first.output
    second = copyjob("apply", job, "--until-caught-up")
    assert _messages(kafka_broker, f"{prefix}.items.dlq") == 8
    assert second.code == 0, second.output


def test_events_whose_table_cannot_be_created_are_dead_lettered_once(tmp_path: Path,
                                                                     kafka_broker: KafkaBroker) -> None:
    """``create_tables: false`` and no destination table: every event goes to the dead-letter topic once (before:
    the first event of each run, again and again, and the run failed)."""
    job, prefix = _job(tmp_path, kafka_broker, create_tables=False)
    sqlite_exec(tmp_path / "shop.db", "INSERT INTO items VALUES (?, ?)", [(i, f"n{i}") for i in range(1, 9)])
    captured = copyjob("capture", job)
    assert captured.code == 0, captured.output
    for _ in range(2):
        copyjob("apply", job, "--until-caught-up")
    assert _messages(kafka_broker, f"{prefix}.items.dlq") == 8
    # the table created by hand, the events dead-lettered are not applied again (they are in the DLQ), new ones are
    import duckdb

    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        con.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR)")
    sqlite_exec(tmp_path / "shop.db", "UPDATE items SET name = 'new' WHERE id = 1")
    assert copyjob("capture", job).code == 0
    applied = copyjob("apply", job, "--until-caught-up")
    assert applied.code == 0, applied.output
    assert duckdb_rows(tmp_path / "wh.duckdb", "SELECT count(*), count(*) FILTER (name = 'new') FROM items") == [
        (8, 1)]
    assert _messages(kafka_broker, f"{prefix}.items.dlq") == 8
