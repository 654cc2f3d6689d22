"""``copyjob tail`` prints keys and values as JSON, whoever wrote the topic: keys in Kafka Connect's
``{"schema", "payload"}`` form are unwrapped, and nested values stay JSON objects (never a Python repr)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import copyjob, sqlite_script, write_job
from tests.services.kafka import KafkaBroker

KEY_SCHEMA = {"type": "struct", "optional": False, "name": "shop.main.items.Key",
              "fields": [{"field": "id", "type": "int32", "optional": False}]}
AMOUNT = {"type": "struct", "optional": True, "name": "io.debezium.data.VariableScaleDecimal",
          "fields": [{"field": "scale", "type": "int32", "optional": False},
                     {"field": "value", "type": "bytes", "optional": False}]}
ROW_SCHEMA = {"type": "struct", "optional": True, "name": "shop.main.items.Value",
              "fields": [{"field": "id", "type": "int32", "optional": False}, {"field": "amount", **AMOUNT}]}


def _connect_message(row_id: int) -> tuple[bytes, bytes]:
    """A key and value as Kafka Connect's JsonConverter writes them with ``schemas.enable=true``."""
    key = {"schema": KEY_SCHEMA, "payload": {"id": row_id}}
    value = {"schema": {"type": "struct", "name": "shop.main.items.Envelope", "fields": [
        {"field": "before", **ROW_SCHEMA}, {"field": "after", **ROW_SCHEMA},
        {"field": "op", "type": "string", "optional": False}, {"field": "ts_ms", "type": "int64", "optional": True}]},
        "payload": {"before": None, "after": {"id": row_id, "amount": {"scale": 2, "value": "BNI="}}, "op": "c",
                    "source": {"connector": "postgresql", "table": "items"}, "ts_ms": 1_767_225_600_000}}
    return json.dumps(key).encode(), json.dumps(value).encode()


def test_tail_prints_connect_keys_unwrapped_and_values_as_json(tmp_path: Path, kafka_broker: KafkaBroker) -> None:
    from confluent_kafka import Producer
    from copyjob.connectors.kafka.client import Admin

    prefix = f"tail{os.getpid()}"
    topic = f"{prefix}.main.items"
    sqlite_script(tmp_path / "shop.db", "CREATE TABLE items (id INTEGER PRIMARY KEY, amount NUMERIC(12,2));")
    Admin(kafka_broker.bootstrap, {}).ensure_topics({topic: True, f"{prefix}._schemas": True}, 1, 1)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for row_id in (1, 2):
        key, value = _connect_message(row_id)
        producer.produce(topic, key=key, value=value)
    producer.produce(topic, key=_connect_message(2)[0], value=None)  # a tombstone
    assert producer.flush(30) == 0
    job = write_job(tmp_path / "job.yaml", {
        "job": prefix, "source": {"url": "sqlite:///shop.db"}, "destination": {"url": "duckdb:///wh.duckdb"},
        "copy": {"mode": "incremental", "update_method": "merge"},
        "tables": [{"name": "items", "incremental_column": "id"}], "transport": "kafka",
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic_prefix": prefix}})
    tail = copyjob("tail", job, "--from-beginning", "--max", "3", "--idle-timeout", "60")
    assert tail.code == 0, tail.output
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["key"] for e in events] == [{"id": 1}, {"id": 2}, {"id": 2}]
    assert events[0]["op"] == "c" and events[0]["after"] == {"id": 1, "amount": {"scale": 2, "value": "BNI="}}
    assert events[2]["op"] is None and events[2]["after"] is None


def test_a_job_without_topic_prefix_keeps_its_schemas_where_tail_reads_them(tmp_path: Path,
                                                                           kafka_broker: KafkaBroker) -> None:
    """Without ``kafka.topic_prefix`` the topics are ``copyjob.<env>.…`` and so is the schema topic (it used to be
    ``None._schemas``, which ``tail`` never read: it could not decode the job's own messages)."""
    from confluent_kafka.admin import AdminClient

    env = f"env{os.getpid()}"
    sqlite_script(tmp_path / "shop.db", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
                                        "INSERT INTO items VALUES (1, 'a'), (2, 'b');")
    (tmp_path / "variables.yaml").write_text(f"{env}: {{}}\n")
    job = write_job(tmp_path / "job.yaml", {
        "job": f"noprefix{os.getpid()}", "source": {"url": "sqlite:///shop.db"},
        "destination": {"url": "duckdb:///wh.duckdb"}, "copy": {"mode": "full", "update_method": "merge"},
        "tables": [{"name": "items"}], "transport": "kafka", "kafka": {"bootstrap_servers": kafka_broker.bootstrap}})
    captured = copyjob("capture", job, "--env", env)
    assert captured.code == 0, captured.output
    topics = AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(timeout=30).topics
    assert f"copyjob.{env}._schemas" in topics
    tail = copyjob("tail", job, "--env", env, "--from-beginning", "--max", "2", "--idle-timeout", "60")
    assert tail.code == 0, tail.output
    assert sorted(json.loads(line)["after"]["name"] for line in tail.stdout.splitlines()) == ["a", "b"]
