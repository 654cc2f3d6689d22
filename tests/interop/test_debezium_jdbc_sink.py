"""Debezium's JDBC sink connector (io.debezium.connector.jdbc.JdbcSinkConnector, on Kafka Connect standalone)
applies the topic of a copyjob ``mode: cdc`` job with ``kafka.format: debezium`` into another PostgreSQL: a
snapshot, then inserts, updates, a key change and deletes over every common column type. The sink's table must
equal the source row by row, with the column types the sink derived from copyjob's Connect schemas (numeric,
timestamps, date, uuid, … and not text)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.debezium import capture, jdbc, job_file
from tests.pg_cdc import drop_slots, execute, rows
from tests.services.kafka import KafkaBroker
from tests.services.kafka_connect import KafkaConnect

COLUMNS = "id, big, txt, amount, tz, ts, d, b, u, j, bin"
EXPECTED_TYPES = {"id": ("integer",), "big": ("bigint",), "txt": ("text", "character varying"),
                  "amount": ("numeric",), "tz": ("timestamp with time zone",),
                  "ts": ("timestamp without time zone",), "d": ("date",), "b": ("boolean",), "u": ("uuid",),
                  "j": ("json", "jsonb"), "bin": ("bytea",)}


@pytest.fixture(autouse=True)
def _slots(pg_url: str) -> Iterator[None]:
    yield
    drop_slots(pg_url)


def changes(src: str) -> None:
    """Inserts, updates, a key change and deletes, some of them in one transaction."""
    execute(src, "BEGIN",
            "INSERT INTO items SELECT g, g * 1000000000::bigint, 'new ' || g, g * -1.25, "
            "'2024-03-04 05:06:07.000001+01'::timestamptz + g * interval '1 hour', "
            "'1999-12-31 23:59:59.5'::timestamp + g * interval '1 day', date '2000-02-28' + g, g % 3 = 0, "
            "md5(g::text)::uuid, jsonb_build_object('g', g, 'tags', jsonb_build_array('x', g)), "
            "decode(md5(g::text), 'hex') FROM generate_series(51, 60) g",
            "UPDATE items SET amount = amount + 0.01, txt = 'paid' WHERE id % 5 = 0",
            "COMMIT",
            "UPDATE items SET id = 1003, txt = 'moved' WHERE id = 3",
            "UPDATE items SET tz = NULL, ts = NULL, j = NULL, bin = NULL, u = NULL WHERE id = 4",
            "DELETE FROM items WHERE id IN (7, 8, 55)")


def wait_equal(connect: KafkaConnect, name: str, src: str, dst: str, timeout_s: float = 240.0) -> None:
    """Until the sink's table equals the source; fails with the connector's trace when a task FAILED."""
    expected = rows(src, f"SELECT {COLUMNS} FROM items ORDER BY id")
    deadline = time.monotonic() + timeout_s
    got: list[tuple[object, ...]] = []
    while time.monotonic() < deadline:
        failed = connect.failures(name)
        if failed:
            pytest.fail(f"the JDBC sink failed:\n{failed[0][:6000]}")
        if rows(dst, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'items'") == [(1,)]:
            got = rows(dst, f"SELECT {COLUMNS} FROM items ORDER BY id")
            if got == expected:
                return
        time.sleep(0.5)
    missing, extra = [r for r in expected if r not in got], [r for r in got if r not in expected]
    pytest.fail(f"the sink's table differs from the source after {timeout_s:.0f}s:\nmissing {missing[:5]}\n"
                f"extra {extra[:5]}\n{connect.log_tail(40)}")


def test_debeziums_jdbc_sink_applies_copyjobs_topic(tmp_path: Path, kafka_broker: KafkaBroker,
                                                    kafka_connect: KafkaConnect, pg_url: str, pg_url2: str) -> None:
    execute(pg_url, "CREATE TABLE items (id int PRIMARY KEY, big bigint, txt text, amount numeric(12,2), "
            "tz timestamptz, ts timestamp, d date, b bool, u uuid, j jsonb, bin bytea)",
            "INSERT INTO items SELECT g, g * 1000000000::bigint, 'row ' || g, g * 1.5 - 20, "
            "'2024-01-02 03:04:05+00'::timestamptz + g * interval '1 minute 0.123456 second', "
            "'2024-01-02 03:04:05.25'::timestamp - g * interval '1 day', date '1970-01-01' + g * 100, g % 2 = 0, "
            "gen_random_uuid(), jsonb_build_object('n', g), decode(lpad(to_hex(g), 8, '0'), 'hex') "
            "FROM generate_series(1, 50) g",
            "INSERT INTO items (id) VALUES (50000)")  # every other column null
    job, prefix = job_file(tmp_path, kafka_broker, pg_url, pg_url2, "items")
    capture(job)  # the snapshot (op r)
    changes(pg_url)
    capture(job)  # the changes (c/u/d, a tombstone after each delete)
    name = f"jdbc-{uuid.uuid4().hex[:8]}"
    kafka_connect.add(name, {
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector", "tasks.max": "1",
        "topics": f"{prefix}.public.items", **jdbc(pg_url2), "insert.mode": "upsert", "delete.enabled": "true",
        "primary.key.mode": "record_key", "schema.evolution": "basic", "collection.name.format": "items",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter", "key.converter.schemas.enable": "true",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter", "value.converter.schemas.enable": "true",
        "consumer.override.auto.offset.reset": "earliest"})
    try:
        wait_equal(kafka_connect, name, pg_url, pg_url2)
        types = dict(rows(pg_url2, "SELECT column_name, data_type FROM information_schema.columns "
                                   "WHERE table_name = 'items'"))
        assert {c: t for c, t in types.items() if t not in EXPECTED_TYPES[c]} == {}
        assert rows(pg_url2, "SELECT numeric_precision, numeric_scale FROM information_schema.columns "
                             "WHERE table_name = 'items' AND column_name = 'amount'") == [(12, 2)]
    finally:
        kafka_connect.delete(name)
