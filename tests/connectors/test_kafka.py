"""The Kafka connector: Avro schemas and encodings, the schema topic, the registry wire format, JSON, tombstones.

Encoding tests run without a broker; the schema-topic and transport tests use the session's real broker. No
real schema registry can run here, so the registry client is tested against a small in-test HTTP stub that
speaks the same REST calls: Confluent's is not on Maven Central, Karapace is not on PyPI, and Apicurio Registry
cannot be assembled from what Maven Central serves here (3.3.3: apicurio-registry-schema-util-provider and
Quarkus extension parent POMs missing; 3.0.9: its parent POM missing; 2.6.13.Final: schema-util-provider and
apicurio-common-app-components missing).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import copyjob.connectors.kafka as kafka_api
import pytest
from copyjob.connectors.kafka import avro
from copyjob.connectors.kafka.codec import Decoder, Encoder, SourceInfo
from copyjob.connectors.kafka.memory import MemoryTransport
from copyjob.connectors.kafka.schemas import RegistryClient, SchemaTopic

from copyjob.core.changes import ChangeEvent
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from tests.services.kafka import KafkaBroker

SCHEMA = TableSchema(TableName("orders", "public"), (
    Column("id", LogicalType("int64"), nullable=False),
    Column("amount", LogicalType("decimal", 12, 2)),
    Column("big", LogicalType("decimal")),
    Column("paid at", LogicalType("timestamptz")),
    Column("local", LogicalType("timestamp")),
    Column("day", LogicalType("date")),
    Column("at", LogicalType("time")),
    Column("ref", LogicalType("uuid")),
    Column("doc", LogicalType("json")),
    Column("blob", LogicalType("binary")),
    Column("ok", LogicalType("bool")),
    Column("ratio", LogicalType("float64")),
    Column("small", LogicalType("int16")),
), primary_key=("id",))
ROW = {"id": 7, "amount": decimal.Decimal("12.50"), "big": "123456789012345678901234567890.5",
       "paid at": dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC), "local": dt.datetime(2026, 1, 2, 3, 4, 5),
       "day": dt.date(2026, 1, 2), "at": dt.time(3, 4, 5, 6), "ref": str(uuid.UUID(int=5)), "doc": '{"a": 1}',
       "blob": b"\x00\xff", "ok": True, "ratio": 0.25, "small": -3}
INFO = SourceInfo("postgresql", "shop", "public", "orders")


def test_public_api_is_pinned() -> None:
    assert sorted(kafka_api.__all__) == ["DecodedMessage", "Decoder", "decode_message", "dlq_topic",
                                         "open_decoder", "schema_topic_name", "source_info", "topic_name",
                                         "topic_of"]
    assert kafka_api.topic_name("shop", "public", "orders") == "shop.public.orders"
    assert kafka_api.dlq_topic("shop", "orders") == "shop.orders.dlq"


def test_fingerprint_is_the_specifications_crc64() -> None:
    from fastavro.schema import fingerprint

    schema = avro.envelope_schema("shop.public.orders", SCHEMA)
    canonical = avro.canonical_form(schema)
    # fastavro prints the 8 bytes in the order they are written (little-endian)
    assert avro.canonical_fingerprint(schema).to_bytes(8, "little").hex() == fingerprint(canonical, "CRC-64-AVRO")
    # copyjob's own fingerprint: the same CRC over the whole text, copyjob.* attributes included
    assert avro.fingerprint(schema).to_bytes(8, "little").hex() == fingerprint(avro.full_text(schema),
                                                                                "CRC-64-AVRO")
    # the specification's example: the fingerprint of "int" (Parsing Canonical Form "\"int\"")
    assert avro.crc64_avro(b'"int"') == 0x7275D51A3F395C8F


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_every_type_round_trips(fmt: Any) -> None:
    bus = MemoryTransport()
    enc = Encoder(fmt, bus).for_table("shop.public.orders", SCHEMA, ("id",))
    event = ChangeEvent("u", {"id": 7}, ROW, position={"lsn": 9}, ts_ms=1_700_000_000_000)
    key, value = enc.encode_key(ROW), enc.encode_value(event, INFO)
    decoded = Decoder(bus).decode(value, key, enc.headers)
    assert decoded.op == "u" and decoded.after == ROW and decoded.key == {"id": 7}
    assert decoded.before == {**dict.fromkeys(ROW), "id": 7} if fmt == "avro" else decoded.before == {"id": 7}
    assert decoded.source["table"] == "orders" and decoded.position == {"lsn": 9}
    assert decoded.schema == SCHEMA
    back = decoded.to_event()
    assert back.after == ROW and back.ts_ms == 1_700_000_000_000
    if fmt == "avro":
        assert value[:2] == b"\xc3\x01"
        assert int.from_bytes(value[2:10], "little") == avro.fingerprint(
            json.dumps(avro.envelope_schema("shop.public.orders", SCHEMA), sort_keys=True))
    else:
        doc = json.loads(value)
        assert doc["after"]["amount"] == "12.50" and doc["after"]["paid at"].startswith("2026-01-02T03:04:05")
        assert set(doc) == {"before", "after", "op", "source", "ts_ms"}


def test_arrow_rows_encode_as_snapshot_events() -> None:
    bus = MemoryTransport()
    enc = Encoder("avro", bus).for_table("shop.public.orders", SCHEMA, ("id",))
    import pyarrow as pa

    rows = pa.RecordBatch.from_pylist([ROW, {**ROW, "id": 8}], schema=SCHEMA.arrow_schema())
    pairs = list(enc.encode_rows(rows, "r", INFO, {"watermark": None}))
    decoded = [Decoder(bus).decode(v, k) for k, v in pairs]
    assert [d.op for d in decoded] == ["r", "r"] and [d.key for d in decoded] == [{"id": 7}, {"id": 8}]
    assert decoded[1].after == {**ROW, "id": 8} and decoded[0].source["snapshot"] == "true"


def test_new_column_is_a_new_schema_version_and_both_decode() -> None:
    bus = MemoryTransport()
    encoder = Encoder("avro", bus)
    v1 = encoder.for_table("t.main.x", SCHEMA, ("id",))
    wider = TableSchema(SCHEMA.table, (*SCHEMA.columns, Column("note", LogicalType("string"))), ("id",))
    v2 = encoder.for_table("t.main.x", wider, ("id",))
    old = v1.encode_value(ChangeEvent("c", None, ROW), INFO)
    new = v2.encode_value(ChangeEvent("c", None, {**ROW, "note": "hi"}), INFO)
    assert old[2:10] != new[2:10]
    decoder = Decoder(bus)
    assert decoder.decode(old).after == ROW
    assert decoder.decode(new).after == {**ROW, "note": "hi"} and decoder.decode(new).schema == wider


def test_tombstone_and_decode_message_with_fixed_schemas() -> None:
    bus = MemoryTransport()
    enc = Encoder("avro", bus).for_table("shop.public.orders", SCHEMA, ("id",))
    key = enc.encode_key({"id": 3})
    tomb = kafka_api.decode_message(None, key, schemas=bus._schemas)
    assert tomb.op is None and tomb.key == {"id": 3}
    with pytest.raises(Exception, match="tombstone"):
        tomb.to_event()


# ---------------------------------------------------------------- with the broker


def test_schema_topic_lets_another_process_decode(kafka_broker: KafkaBroker) -> None:
    writer = SchemaTopic(kafka_broker.bootstrap, {}, "sch1")
    from copyjob.connectors.kafka.client import Admin

    Admin(kafka_broker.bootstrap, {}).ensure_topics({"sch1._schemas": True}, 1, 1)
    enc = Encoder("avro", writer).for_table("sch1.public.orders", SCHEMA, ("id",))
    value = enc.encode_value(ChangeEvent("c", None, ROW), INFO)
    decoder = kafka_api.open_decoder(kafka_broker.bootstrap, "sch1")  # knows nothing yet: reads the topic
    assert decoder.decode(value).after == ROW
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    resource = ConfigResource("topic", "sch1._schemas")
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["cleanup.policy"].value == "compact"


class _Registry(BaseHTTPRequestHandler):
    schemas: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body["schema"] not in self.schemas:
            self.schemas.append(body["schema"])
        self._reply(200, {"id": self.schemas.index(body["schema"]) + 1})

    def do_GET(self) -> None:
        n = int(self.path.rsplit("/", 1)[1])
        if 0 < n <= len(self.schemas):
            self._reply(200, {"schema": self.schemas[n - 1]})
        else:
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})

    def _reply(self, code: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry_url() -> Iterator[str]:
    _Registry.schemas = []
    server = HTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_registry_wire_format(registry_url: str) -> None:
    client = RegistryClient(registry_url)
    enc = Encoder("avro", client).for_table("reg.public.orders", SCHEMA, ("id",))
    value = enc.encode_value(ChangeEvent("d", ROW, None), INFO)
    key = enc.encode_key(ROW)
    assert value[:1] == b"\x00" and key is not None and key[:1] == b"\x00"
    assert {int.from_bytes(value[1:5], "big"), int.from_bytes(key[1:5], "big")} == {1, 2}
    decoded = Decoder(RegistryClient(registry_url)).decode(value, key)
    assert decoded.op == "d" and decoded.before == ROW and decoded.key == {"id": 7}
    assert decoded.schema_ref is not None and decoded.schema_ref.startswith("id:")


# ---------------------------------------------------------------- admin calls through a broker restart


class _RestartingAdmin:
    """An AdminClient whose brokers are fenced (restarting) for the first ``fenced`` calls of each kind, as
    KRaft answers topic creation and metadata while they register again."""

    def __init__(self, fenced: int) -> None:
        self.fenced = {"create": fenced, "list": fenced}
        self.topics: set[str] = set()
        self.calls = {"create": 0, "list": 0}

    def _down(self, call: str) -> bool:
        self.calls[call] += 1
        if self.fenced[call] > 0:
            self.fenced[call] -= 1
            return True
        return False

    def list_topics(self, topic: str | None = None, timeout: float = 0) -> Any:
        from confluent_kafka import KafkaError, KafkaException

        if self._down("list"):
            raise KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE, "no leader while restarting"))
        part = type("P", (), {"leader": 1})()
        meta = {t: type("T", (), {"error": None, "partitions": {0: part}})() for t in self.topics}
        return type("M", (), {"topics": meta})()

    def create_topics(self, new: list[Any], operation_timeout: float = 0) -> dict[str, Any]:
        from concurrent.futures import Future

        from confluent_kafka import KafkaError, KafkaException

        down = self._down("create")
        out: dict[str, Future[None]] = {}
        for topic in new:
            future: Future[None] = Future()
            if down:
                future.set_exception(KafkaException(KafkaError(
                    KafkaError.INVALID_REPLICATION_FACTOR,
                    "Unable to replicate the partition 1 time(s): All brokers are currently fenced.")))
            else:
                self.topics.add(topic.topic)
                future.set_result(None)
            out[topic.topic] = future
        return out


def test_admin_calls_ride_out_fenced_brokers() -> None:
    """A broker restarting while a run creates its topics: the calls are tried again, then succeed."""
    from copyjob.connectors.kafka.client import Admin

    admin = Admin("127.0.0.1:1", {})
    fake = _RestartingAdmin(fenced=1)
    admin._admin = fake
    assert sorted(admin.ensure_topics({"a.orders": False, "a._schemas": True}, 1, 1)) == ["a._schemas", "a.orders"]
    assert fake.calls["create"] == 2 and fake.calls["list"] >= 2
    assert admin.partitions("a.orders") == [0]


def test_admin_calls_give_up_after_a_bounded_number_of_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    import copyjob.connectors.kafka.client as client
    from copyjob.connectors.kafka.client import ADMIN_ATTEMPTS, Admin

    from copyjob.core.errors import ConnectionFailed

    monkeypatch.setattr(client, "retrying", _no_wait(client.retrying))
    admin = Admin("127.0.0.1:1", {})
    fake = _RestartingAdmin(fenced=1000)
    fake.fenced["list"] = 0
    admin._admin = fake
    with pytest.raises(ConnectionFailed, match="All brokers are currently fenced"):
        admin.ensure_topics({"b.orders": False}, 1, 1)
    assert fake.calls["create"] == ADMIN_ATTEMPTS


def test_terminal_admin_errors_are_not_retried() -> None:
    from confluent_kafka import KafkaError, KafkaException
    from copyjob.connectors.kafka.client import translate

    refused = translate(KafkaException(KafkaError(KafkaError.INVALID_REPLICATION_FACTOR,
                                                  "Replication factor: 3 larger than available brokers: 1.")), "x")
    assert not refused.retriable
    assert translate(KafkaException(KafkaError(KafkaError.NOT_CONTROLLER, "moved")), "x").retriable


def _no_wait(retrying: Any) -> Any:
    def fast(*args: Any, **kwargs: Any) -> Any:
        return retrying(*args, sleep=lambda _: None, **kwargs)

    return fast


def test_json_format_writes_nan_and_infinity_as_strings_and_reads_them_back() -> None:
    import math

    schema = TableSchema(TableName("floats", "public"), (Column("id", LogicalType("int64"), nullable=False),
                                                         Column("f", LogicalType("float64"))), ("id",))
    bus = MemoryTransport()
    enc = Encoder("json", bus).for_table("shop.public.floats", schema, ("id",))
    for value, text in ((math.inf, "Infinity"), (-math.inf, "-Infinity"), (math.nan, "NaN")):
        row = {"id": 1, "f": value}
        encoded = enc.encode_value(ChangeEvent("c", None, row, position={"lsn": 1}), INFO)
        doc = json.loads(encoded, parse_constant=lambda token: pytest.fail(f"bare {token} is not JSON"))
        assert doc["after"]["f"] == text
        back = Decoder(bus).decode(encoded, None, enc.headers).after
        assert back is not None and (math.isnan(back["f"]) if text == "NaN" else back["f"] == value)
