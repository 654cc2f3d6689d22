"""Debezium's PostgreSQL connector (pgoutput, its own slot and publication, snapshot.mode=initial, JsonConverter
with schemas.enable=true) and copyjob (``kafka.format: debezium``) capture the same table and the same changes;
their topics are compared event by event, field by field.

Equal: the key and value schemas (names with the topic prefix in them compared after replacing each side's
prefix), the keys, ``op``, ``before``, ``after``, ``transaction`` and tombstones, per key in order, and of the
``source`` block ``connector``, ``db``, ``schema``, ``table``, ``xmin``, ``origin``, ``origin_lsn`` and the
snapshot marker of change events.

Excluded, and why:
- ``ts_ms``, ``ts_us``, ``ts_ns`` (envelope and source): times of processing;
- ``source.version``: the writer's version (``3.6.1.Final`` vs ``copyjob-…``);
- ``source.name``: the logical name is the topic prefix, which must differ for both to publish on one broker;
- ``source.txId``, ``source.lsn``, ``source.sequence``: log ids; copyjob's positions carry the transaction's
  commit LSN, not each change's LSN nor the transaction id (txId and sequence are null);
- the scale of an unconstrained ``numeric`` (``io.debezium.data.VariableScaleDecimal``): compared as numbers,
  because Debezium's snapshot (pgjdbc's binary numeric) drops trailing zeros that its streaming keeps
  (``31.41590`` is scale 4 in its snapshot, scale 5 when streamed); copyjob keeps PostgreSQL's scale in both;
- which snapshot rows are ``first`` and ``last``: both mark one row each, but the rows each read first and
  last depend on the scan order (so for ``r`` events each side must have exactly one ``first``, one ``last``
  and ``true`` otherwise).
"""

from __future__ import annotations

import base64
import decimal
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.interop.debezium import Message, capture, job_file, read_topic
from tests.pg_cdc import drop_slots, execute
from tests.services.kafka import KafkaBroker
from tests.services.kafka_connect import KafkaConnect

TABLE = ("CREATE TABLE t (id int PRIMARY KEY, big bigint, small smallint, txt text, vc varchar(20), "
         "amount numeric(12,2), num numeric, tz timestamptz, ts timestamp, d date, tm time, b bool, u uuid, "
         "j jsonb, js json, bin bytea, f4 real, f8 double precision, note text)")
ROWS = 40
SOURCE_COMPARED = ("connector", "db", "schema", "table", "xmin", "origin", "origin_lsn")


@pytest.fixture(autouse=True)
def _slots(pg_url: str) -> Iterator[None]:
    yield
    drop_slots(pg_url)


def changes(src: str) -> None:
    execute(src,
            "BEGIN",
            "INSERT INTO t (id, txt, amount, num, tz, ts, tm, f4, f8) SELECT g, 'new', g * -0.01, g / 7.0, "
            "'2024-05-06 07:08:09.5+02', '2024-05-06 07:08:09', '23:59:59.999999', g / 3.0, 1e300 "
            "FROM generate_series(101, 105) g",
            "UPDATE t SET txt = 'paid', amount = amount + 1 WHERE id % 10 = 0",
            "COMMIT",
            "UPDATE t SET id = 1003 WHERE id = 3",  # a key change: delete, tombstone, create
            "UPDATE t SET b = NOT b WHERE id = 1",  # note is TOASTed and unchanged: the placeholder
            "DELETE FROM t WHERE id IN (5, 102)",
            "UPDATE t SET num = 'NaN', vc = NULL WHERE id = 6")


def debezium_config(url: str, prefix: str) -> dict[str, str]:
    parts = urlsplit(url)
    slot = f"dbz_{uuid.uuid4().hex[:10]}"
    return {"connector.class": "io.debezium.connector.postgresql.PostgresConnector", "tasks.max": "1",
            "plugin.name": "pgoutput", "database.hostname": parts.hostname or "", "database.port": str(parts.port),
            "database.user": parts.username or "", "database.password": parts.password or "",
            "database.dbname": parts.path.lstrip("/"), "topic.prefix": prefix, "slot.name": slot,
            "publication.name": slot, "publication.autocreate.mode": "filtered", "table.include.list": "public.t",
            "snapshot.mode": "initial", "topic.creation.default.replication.factor": "1",
            "topic.creation.default.partitions": "1",
            "key.converter": "org.apache.kafka.connect.json.JsonConverter", "key.converter.schemas.enable": "true",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "true"}


def events(messages: list[Message], prefix: str) -> dict[Any, list[dict[str, Any] | None]]:
    """Per key payload (without the prefix in schema names), the messages' documents in order: {"key",
    "value"} with the value's schema and payload, None for a tombstone's value."""
    per_key: dict[Any, list[dict[str, Any] | None]] = defaultdict(list)
    for key, value in messages:
        assert key is not None
        k = json.loads(key.decode().replace(f'"{prefix}.', '"PREFIX.'))
        v = json.loads(value.decode().replace(f'"{prefix}.', '"PREFIX.')) if value is not None else None
        per_key[json.dumps(k["payload"], sort_keys=True)].append({"key": k, "value": v})
    return per_key


def compared(doc: dict[str, Any] | None) -> Any:
    """What must be equal in one message (see the module docstring)."""
    if doc is None or doc["value"] is None:
        return doc
    payload = doc["value"]["payload"]
    source = payload["source"]
    return {"key": doc["key"], "schema": doc["value"]["schema"], "op": payload["op"],
            "before": as_numbers(payload["before"]), "after": as_numbers(payload["after"]),
            "transaction": payload["transaction"],
            "source": {k: source[k] for k in SOURCE_COMPARED},
            "snapshot": source["snapshot"] if payload["op"] != "r" else "r"}


def as_numbers(image: dict[str, Any] | None) -> dict[str, Any] | None:
    """The image with each VariableScaleDecimal ({scale, value}) as its number."""
    if image is None:
        return None
    return {k: decimal.Decimal(int.from_bytes(base64.b64decode(v["value"]), "big", signed=True)).scaleb(
        -v["scale"]).normalize() if isinstance(v, dict) and set(v) == {"scale", "value"} else v
        for k, v in image.items()}


def snapshot_markers(messages: list[Message]) -> Counter[str]:
    return Counter(json.loads(v)["payload"]["source"]["snapshot"] for _, v in messages
                   if v is not None and json.loads(v)["payload"]["op"] == "r")


def count_ops(messages: list[Message]) -> Counter[str]:
    return Counter(json.loads(v)["payload"]["op"] if v is not None else "tombstone" for _, v in messages)


def test_copyjob_publishes_what_debeziums_postgresql_connector_publishes(
        tmp_path: Path, kafka_broker: KafkaBroker, kafka_connect: KafkaConnect, pg_url: str, pg_url2: str) -> None:
    execute(pg_url, TABLE, "ALTER TABLE t ALTER COLUMN note SET STORAGE EXTERNAL",
            "INSERT INTO t SELECT g, g * 10000000000, g, 'row ' || g, 'v' || g, g * 1.25 - 7, g * 3.14159, "
            "'2024-01-02 03:04:05+00'::timestamptz + g * interval '1.000001 second', "
            "'2024-01-02 03:04:05.123456'::timestamp - g * interval '1 day', date '1969-12-25' + g, "
            "time '03:04:05.5' + g * interval '1 minute', g % 2 = 0, md5(g::text)::uuid, "
            "jsonb_build_object('a', g, 'b', jsonb_build_array(1, 'x')), ('{\"k\" : ' || g || '}')::json, "
            "decode(md5(g::text), 'hex'), g / 4.0, g / 3.0, repeat(md5(g::text), 100) "
            f"FROM generate_series(1, {ROWS}) g",
            "INSERT INTO t (id) VALUES (0)")  # every other column null
    dbz_prefix = f"dbzref{uuid.uuid4().hex[:8]}"
    name = f"pg-{dbz_prefix}"
    kafka_connect.add(name, debezium_config(pg_url, dbz_prefix))
    try:
        kafka_connect.wait_running(name)
        dbz_topic = f"{dbz_prefix}.public.t"
        # the snapshot is done when its last row is out: changes after it are streamed by both
        read_topic(kafka_broker, dbz_topic, lambda m: snapshot_markers(m)["last"] == 1)
        job, prefix = job_file(tmp_path, kafka_broker, pg_url, pg_url2, "t")
        capture(job)
        changes(pg_url)
        capture(job)
        # inserts 5 + the key change's; updates of ids 0, 10, 20, 30, 40, 1 and 6; deletes 2 + the key change's
        expected_ops = Counter({"r": ROWS + 1, "c": 5 + 1, "u": 5 + 2, "d": 2 + 1, "tombstone": 3})
        dbz = read_topic(kafka_broker, dbz_topic, lambda m: count_ops(m) == expected_ops, describe=count_ops)
        ours = read_topic(kafka_broker, f"{prefix}.public.t", lambda m: count_ops(m) == expected_ops,
                          describe=count_ops)
    finally:
        kafka_connect.delete(name)
    assert snapshot_markers(ours) == snapshot_markers(dbz) == Counter({"first": 1, "last": 1, "true": ROWS - 1})
    theirs, mine = events(dbz, dbz_prefix), events(ours, prefix)
    assert sorted(mine) == sorted(theirs)
    for key in theirs:
        assert len(mine[key]) == len(theirs[key]), key
        for i, (ours_doc, their_doc) in enumerate(zip(mine[key], theirs[key], strict=True)):
            assert differences(compared(ours_doc), compared(their_doc)) == [], (key, i)


def differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Where two JSON documents differ, as paths with both values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return [d for k in sorted(set(ours) | set(theirs), key=str)
                for d in differences(ours.get(k, "<missing>"), theirs.get(k, "<missing>"), f"{path}.{k}")]
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: copyjob {ours!r}, Debezium {theirs!r}"]
