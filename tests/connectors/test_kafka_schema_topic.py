"""The schema topic ``<prefix>._schemas``: one key per schema text copyjob publishes, and topics written with the
older canonical-form fingerprints still decode. On the session's real broker."""

from __future__ import annotations

import json
import os
from itertools import count
from pathlib import Path

from copyjob.connectors.kafka import avro, open_decoder
from copyjob.connectors.kafka.codec import Encoder, SourceInfo
from copyjob.connectors.kafka.schemas import SchemaTopic

from copyjob.core.changes import ChangeEvent
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from tests.helpers import copyjob, duckdb_rows, sqlite_exec, sqlite_script, write_job
from tests.services.kafka import KafkaBroker

_ids = count()
INFO = SourceInfo("sqlite", "shop", "main", "items")


def _schema(nullable: bool) -> TableSchema:
    return TableSchema(TableName("items"), (Column("id", LogicalType("int64"), nullable=False),
                                            Column("name", LogicalType("string"), nullable=nullable)), ("id",))


def _prefix(broker: KafkaBroker) -> str:
    """A fresh topic prefix whose schema topic exists (the test broker creates no topic on its own)."""
    from copyjob.connectors.kafka.client import Admin

    prefix = f"fp{os.getpid()}x{next(_ids)}"
    Admin(broker.bootstrap, {}).ensure_topics({f"{prefix}._schemas": True}, 1, 1)
    return prefix


def test_schemas_that_differ_only_in_copyjob_attributes_get_two_keys(kafka_broker: KafkaBroker) -> None:
    prefix = _prefix(kafka_broker)
    texts = [json.dumps(avro.envelope_schema(f"{prefix}.main.items", _schema(n)), sort_keys=True)
             for n in (False, True)]
    assert avro.canonical_fingerprint(texts[0]) == avro.canonical_fingerprint(texts[1])  # the Avro spec's form
    assert avro.fingerprint(texts[0]) != avro.fingerprint(texts[1])
    # two processes (two captures) each registering their version
    for text in texts:
        SchemaTopic(kafka_broker.bootstrap, {}, prefix).register(f"{prefix}.main.items-value", text)
    stored = SchemaTopic(kafka_broker.bootstrap, {}, prefix).read_all()
    assert sorted(stored.values()) == sorted(texts)


def test_a_topic_written_with_canonical_form_fingerprints_still_decodes(kafka_broker: KafkaBroker) -> None:
    """copyjob until now keyed the schema topic and headed its messages with the canonical-form fingerprint."""
    from confluent_kafka import Producer

    prefix = _prefix(kafka_broker)
    topic = f"{prefix}.main.items"
    text = json.dumps(avro.envelope_schema(topic, _schema(False)), sort_keys=True)
    old_fp = avro.canonical_fingerprint(text)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce(f"{prefix}._schemas", key=f"{old_fp:016x}".encode(), value=text.encode())
    assert producer.flush(30) == 0

    class OldRegistrar:
        def register(self, subject: str, schema_json: str) -> bytes:
            return avro.single_object_header(avro.canonical_fingerprint(schema_json))

    encoder = Encoder("avro", OldRegistrar()).for_table(topic, _schema(False), ("id",))
    value = encoder.encode_value(ChangeEvent("c", None, {"id": 1, "name": "a"}), INFO)
    assert value[2:10] == old_fp.to_bytes(8, "little")
    decoded = open_decoder(kafka_broker.bootstrap, prefix).decode(value)
    assert decoded.after == {"id": 1, "name": "a"} and decoded.schema == _schema(False)


def test_apply_keeps_not_null_of_the_version_a_message_was_written_with(tmp_path: Path,
                                                                       kafka_broker: KafkaBroker) -> None:
    """Two captures whose schemas differ only in NOT NULL: the destination created by apply from the first
    version's messages has the column NOT NULL (before, both versions shared one key in ``_schemas`` and the
    later one, nullable, was taken for every message)."""
    db = tmp_path / "shop.db"
    sqlite_script(db, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
    sqlite_exec(db, "INSERT INTO items VALUES (?, ?)", [(i, f"n{i}") for i in range(1, 4)])
    prefix = f"fp{os.getpid()}x{next(_ids)}"
    job = write_job(tmp_path / "job.yaml", {
        "job": prefix, "source": {"url": "sqlite:///shop.db"}, "destination": {"url": "duckdb:///wh.duckdb"},
        "copy": {"mode": "full", "update_method": "merge"}, "tables": [{"name": "items"}], "transport": "kafka",
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic_prefix": prefix}})
    first = copyjob("capture", job)
    assert first.code == 0, first.output
    sqlite_script(db, "ALTER TABLE items RENAME TO old_items; CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);"
                      "INSERT INTO items SELECT * FROM old_items; DROP TABLE old_items;")
    second = copyjob("capture", job)
    assert second.code == 0, second.output
    applied = copyjob("apply", job, "--until-caught-up")
    assert applied.code == 0, applied.output
    assert duckdb_rows(tmp_path / "wh.duckdb", "SELECT column_name, is_nullable FROM duckdb_columns() "
                                               "WHERE table_name = 'items' ORDER BY column_index") == [
        ("id", False), ("name", False)]
    assert duckdb_rows(tmp_path / "wh.duckdb", "SELECT count(*) FROM items") == [(3,)]
