"""Where writers' schemas live: the compacted schema topic ``<prefix>._schemas`` or a Confluent-compatible
schema registry.

- :class:`SchemaTopic`: each schema is a message keyed by its fingerprint (16 hex digits, CRC-64-AVRO of the whole
  schema text: :func:`connectors.kafka.avro.fingerprint`) whose value is the schema's JSON. Registering produces
  it (once per process) and waits for the broker's acknowledgement, so the schema is durable before any message
  written with it. Looking a fingerprint up reads the whole topic; topics written by copyjob before the
  fingerprint covered the whole text are keyed by the canonical-form fingerprints their messages carry, so their
  messages are found the same way.
- :class:`RegistryClient`: ``POST /subjects/<subject>/versions`` and ``GET /schemas/ids/<id>`` over urllib.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from copyjob.connectors.kafka import avro
from copyjob.connectors.kafka.client import Producer, kafka_module, open_consumer, translate
from copyjob.connectors.kafka.codec import CONFLUENT_MAGIC

from copyjob.core.errors import ConnectionFailed, ConnectorError

LEGACY_SCHEMA_TOPIC = "None._schemas"
"""Where jobs without ``kafka.topic_prefix`` registered their schemas before 2026-12-06 (the prefix was left unset
there); still read when a fingerprint is not found in the schema topic, so older messages decode."""


def schema_topic(prefix: str) -> str:
    return f"{prefix}._schemas"


class SchemaTopic:
    """Registrar and lookup over the compacted schema topic."""

    def __init__(self, bootstrap_servers: str, config: Mapping[str, Any], prefix: str,
                 producer: Producer | None = None) -> None:
        self._servers = bootstrap_servers
        self._config = dict(config)
        self.topic = schema_topic(prefix)
        self._producer = producer
        self._known: dict[int, str] = {}
        self._published: set[int] = set()
        self._lock = threading.Lock()

    def register(self, subject: str, schema_json: str) -> bytes:
        fp = avro.fingerprint(schema_json)
        with self._lock:
            self._known[fp] = schema_json
            if fp not in self._published:
                if self._producer is None:
                    self._producer = Producer(self._servers, self._config)
                self._producer.produce(self.topic, f"{fp:016x}".encode(), schema_json.encode())
                self._producer.flush()
                self._published.add(fp)
        return avro.single_object_header(fp)

    def by_fingerprint(self, fp: int) -> str | None:
        if fp not in self._known:
            self._known.update(self.read_all())
        if fp not in self._known and self.topic != LEGACY_SCHEMA_TOPIC:
            # jobs without kafka.topic_prefix wrote their schemas to "None._schemas" before 2026-12-06
            self._known.update({k: v for k, v in self.read_all(topic=LEGACY_SCHEMA_TOPIC).items()
                                if k not in self._known})
        return self._known.get(fp)

    def by_id(self, schema_id: int) -> str | None:
        return None

    def read_all(self, timeout_s: float = 10.0, topic: str | None = None) -> dict[int, str]:
        """Every schema in the topic (or in ``topic``): fingerprint → schema JSON."""
        ck = kafka_module()
        topic = topic or self.topic
        consumer = open_consumer(self._servers, self._config, group_id=f"copyjob-schemas-{time.time_ns()}")
        found: dict[int, str] = {}
        try:
            meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if meta is None or meta.error is not None:
                return found
            parts = []
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=timeout_s)
                if high > low:
                    parts.append((p, high))
            consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p, _ in parts])
            pending = {p: high for p, high in parts}
            deadline = time.monotonic() + timeout_s
            while pending and time.monotonic() < deadline:
                for msg in consumer.consume(500, 0.5):
                    if msg.error() is not None:
                        continue
                    key, value, offset = msg.key(), msg.value(), msg.offset() or 0
                    if isinstance(key, bytes) and isinstance(value, bytes):
                        found[int(key.decode(), 16)] = value.decode()
                    if offset + 1 >= pending.get(msg.partition() or 0, 0):
                        pending.pop(msg.partition() or 0, None)
        except ck.KafkaException as exc:
            raise translate(exc, f"reading {topic}") from exc
        finally:
            consumer.close()
        return found


class RegistryClient:
    """A tiny client of a Confluent-compatible schema registry (Confluent, Karapace, Apicurio's ccompat API)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout_s
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, str] = {}

    def register(self, subject: str, schema_json: str) -> bytes:
        cache_key = f"{subject}\0{schema_json}"
        if cache_key not in self._ids:
            reply = self._call("POST", f"/subjects/{urllib.parse.quote(subject, safe='')}/versions",
                               {"schema": schema_json, "schemaType": "AVRO"})
            self._ids[cache_key] = int(reply["id"])
            self._schemas[int(reply["id"])] = schema_json
        return CONFLUENT_MAGIC + self._ids[cache_key].to_bytes(4, "big")

    def by_id(self, schema_id: int) -> str | None:
        if schema_id not in self._schemas:
            try:
                reply = self._call("GET", f"/schemas/ids/{schema_id}", None)
            except ConnectorError as exc:
                if "404" in str(exc):
                    return None
                raise
            self._schemas[schema_id] = str(reply["schema"])
        return self._schemas[schema_id]

    def by_fingerprint(self, fp: int) -> str | None:
        return None

    def _call(self, method: str, path: str, body: Any) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Content-Type": "application/vnd.schemaregistry.v1+json",
            "Accept": "application/vnd.schemaregistry.v1+json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise ConnectorError(f"schema registry {method} {path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionFailed(f"schema registry {self.url}: {exc}") from exc


class Schemas:
    """Both lookups: the registry for ids, the schema topic for fingerprints (JSON messages' schema header)."""

    def __init__(self, topic: SchemaTopic, registry: RegistryClient | None) -> None:
        self.topic = topic
        self.registry = registry

    def register(self, subject: str, schema_json: str) -> bytes:
        if self.registry is not None:
            return self.registry.register(subject, schema_json)
        return self.topic.register(subject, schema_json)

    def by_fingerprint(self, fp: int) -> str | None:
        return self.topic.by_fingerprint(fp)

    def by_id(self, schema_id: int) -> str | None:
        return self.registry.by_id(schema_id) if self.registry is not None else None
