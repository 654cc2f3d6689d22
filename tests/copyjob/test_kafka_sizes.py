"""Large rows through ``transport: kafka`` on a broker left at its defaults (1 MB per message): topics, producer
and consumers are set for ``kafka.max_message_bytes`` (16 MiB by default), and a row over it fails its own
table with a message naming the table, the row's key and the setting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from copyjob.connectors.kafka.sizes import MessageTooLarge, check_sizes

from tests.copyjob.test_kafka_pipeline import kafka_job, make_topics
from tests.helpers import copyjob
from tests.pg_cdc import drop_slots, execute
from tests.services.kafka import KafkaBroker

BIG = "SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 100000) g"
"""About 3.2 MB of hex digits: compression cannot bring it under 1 MB."""


@pytest.fixture
def docs(pg_url: str) -> Iterator[str]:
    execute(pg_url, "CREATE TABLE docs (id int PRIMARY KEY, body text)",
            f"INSERT INTO docs VALUES (1, 'small'), (2, ({BIG}))",
            "CREATE TABLE notes (id int PRIMARY KEY, v text)", "INSERT INTO notes VALUES (1, 'a')")
    yield pg_url
    drop_slots(pg_url)


def same_docs(src: str, dst: str) -> None:
    query = "SELECT id, length(body), md5(body) FROM docs ORDER BY id"
    with psycopg.connect(src) as a, psycopg.connect(dst) as b:
        assert b.execute(query).fetchall() == a.execute(query).fetchall()


def test_a_3_mb_row_goes_through_a_full_copy(tmp_path: Path, kafka_broker: KafkaBroker, docs: str,
                                            pg_url2: str) -> None:
    job, _ = kafka_job(tmp_path, kafka_broker, docs, pg_url2, [{"name": "docs"}], update_method="merge")
    result = copyjob("run", job)
    assert result.code == 0, result.output
    same_docs(docs, pg_url2)


def test_a_3_mb_row_goes_through_cdc(tmp_path: Path, kafka_broker: KafkaBroker, docs: str, pg_url2: str) -> None:
    job, _ = kafka_job(tmp_path, kafka_broker, docs, pg_url2, [{"name": "docs"}], mode="cdc",
                       update_method="merge")
    assert (first := copyjob("run", job)).code == 0, first.output  # the snapshot
    execute(docs, f"UPDATE docs SET body = ({BIG}) WHERE id = 1", f"INSERT INTO docs VALUES (3, ({BIG}))")
    assert (second := copyjob("run", job)).code == 0, second.output  # the changes
    same_docs(docs, pg_url2)


def test_a_row_over_the_setting_fails_its_table_alone(tmp_path: Path, kafka_broker: KafkaBroker, docs: str,
                                                      pg_url2: str) -> None:
    job, _ = kafka_job(tmp_path, kafka_broker, docs, pg_url2, [{"name": "docs"}, {"name": "notes"}],
                       update_method="merge", kafka={"max_message_bytes": 2**20})
    result = copyjob("run", job)
    assert result.code == 1
    for words in ("docs", "id=2", "kafka.max_message_bytes (1048576)"):
        assert words in result.output, result.output
    with psycopg.connect(pg_url2) as con:
        assert con.execute("SELECT id, v FROM notes").fetchall() == [(1, "a")]


def test_the_size_check_names_the_message() -> None:
    check_sizes("t", [b"k"], [b"x" * 10], 11)
    with pytest.raises(MessageTooLarge) as caught:
        check_sizes("t", [b"1", b'{"id": 2}'], [b"x", b"x" * 20], 11)
    assert caught.value.index == 1 and caught.value.size == 29
    assert 'key {"id": 2}' in str(caught.value) and "kafka.max_message_bytes (11)" in str(caught.value)


def test_a_topic_made_with_the_broker_default_says_what_to_raise(tmp_path: Path, kafka_broker: KafkaBroker,
                                                                 docs: str, pg_url2: str) -> None:
    job, prefix = kafka_job(tmp_path, kafka_broker, docs, pg_url2, [{"name": "docs"}], update_method="merge")
    make_topics(kafka_broker, [f"{prefix}.public.docs"])  # made before: the broker's 1 MB limit
    result = copyjob("run", job)
    assert result.code == 1
    for words in (f"topic {prefix}.public.docs refused a message", "max.message.bytes", "kafka.max_message_bytes"):
        assert words in result.output, result.output
