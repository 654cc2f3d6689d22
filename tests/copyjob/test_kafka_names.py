"""Kafka topic names made legal as Debezium makes them: a table named with a space, a slash or a non-ASCII
letter publishes to a topic where those characters are ``_``; two tables that would share a topic are a job-file
error at load."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from copyjob.connectors.kafka import dlq_topic, topic_name
from copyjob.connectors.kafka.naming import MAX_TOPIC_LENGTH, collision_key, legal_topic

from tests.copyjob.test_kafka_pipeline import kafka_job
from tests.helpers import copyjob, write_job
from tests.services.kafka import KafkaBroker


def test_characters_kafka_refuses_become_underscores() -> None:
    assert topic_name("copyjob", "CRM", "Mixed Case") == "copyjob.CRM.Mixed_Case"
    assert topic_name("copyjob", "public", "a/b") == "copyjob.public.a_b"
    assert topic_name("copyjob", "public", "café") == "copyjob.public.caf_"
    assert topic_name("copyjob", "public", "ok-name_1.x") == "copyjob.public.ok-name_1.x"
    assert dlq_topic("copyjob", "Mixed Case") == "copyjob.Mixed_Case.dlq"
    assert legal_topic("..") == "__"


def test_long_names_are_shortened_the_same_way_every_time() -> None:
    a, b = topic_name("p", "public", "x" * 300), topic_name("p", "public", "x" * 299 + "y")
    assert len(a) == len(b) == MAX_TOPIC_LENGTH
    assert a != b and a == topic_name("p", "public", "x" * 300)
    dlq = dlq_topic("p", "z" * 300)
    assert len(dlq) == MAX_TOPIC_LENGTH and dlq.endswith(".dlq")


def test_dots_and_underscores_collide() -> None:
    assert collision_key("p.public.a_b") == collision_key("p.public.a.b") == collision_key("p_public_a_b")


@pytest.mark.parametrize("names", [["Mixed Case", "Mixed_Case"], ["a/b", "a?b"]])
def test_two_tables_on_one_topic_are_refused_at_load(tmp_path: Path, names: list[str]) -> None:
    job = write_job(tmp_path / "job.yaml", {
        "job": "names", "source": {"url": "postgresql://u@localhost/db"}, "destination": {"url": "sqlite:///d.db"},
        "transport": "kafka", "kafka": {"bootstrap_servers": "localhost:9092"},
        "tables": [{"name": f"crm.{names[0]}", "target": "one"}, {"name": f"crm.{names[1]}", "target": "two"}]})
    result = copyjob("validate", job)
    assert result.code == 2, result.output
    assert "job.yaml:" in result.output and "tables[1].name" in result.output
    assert names[0] in result.output and names[1] in result.output and "topic" in result.output


def test_targets_sharing_a_dead_letter_topic_are_refused_at_load(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", {
        "job": "names", "source": {"url": "postgresql://u@localhost/db"}, "destination": {"url": "sqlite:///d.db"},
        "transport": "kafka", "kafka": {"bootstrap_servers": "localhost:9092"},
        "tables": [{"name": "one", "target": "x y"}, {"name": "two", "target": "x_y"}]})
    result = copyjob("validate", job)
    assert result.code == 2 and "tables[1].target" in result.output and "dead-letter" in result.output


def test_tables_with_odd_names_copy_through_kafka(tmp_path: Path, kafka_broker: KafkaBroker, pg_url: str,
                                                  pg_url2: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute('CREATE SCHEMA "CRM"')
        for name in ("Mixed Case", "a/b", "café"):
            con.execute(f'CREATE TABLE "CRM"."{name}" (id int PRIMARY KEY, v text)')
            con.execute(f'INSERT INTO "CRM"."{name}" VALUES (1, %s), (2, %s)', (f"{name} 1", f"{name} 2"))
    job, prefix = kafka_job(tmp_path, kafka_broker, pg_url, pg_url2,
                            [{"name": f"CRM.{n}"} for n in ("Mixed Case", "a/b", "café")], update_method="merge")
    result = copyjob("run", job)
    assert result.code == 0, result.output
    with psycopg.connect(pg_url2) as con:
        for name in ("Mixed Case", "a/b", "café"):
            rows = con.execute(f'SELECT id, v FROM "CRM"."{name}" ORDER BY id').fetchall()
            assert rows == [(1, f"{name} 1"), (2, f"{name} 2")]
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(timeout=30).topics
    assert {f"{prefix}.CRM.Mixed_Case", f"{prefix}.CRM.a_b", f"{prefix}.CRM.caf_"} <= set(topics)
