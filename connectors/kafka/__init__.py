"""Apache Kafka as copyjob's transport: topics, the change-event envelope, and the decode API for consumers.

Topics: one per table, ``<prefix>.<schema>.<table>`` (compacted when the table has a key), the schema topic
``<prefix>._schemas`` and the dead-letter topics ``<prefix>.<table>.dlq``; characters Kafka refuses in a
name become ``_`` (:mod:`connectors.kafka.naming`). The envelope and the encodings are
described in :mod:`connectors.kafka.avro` and :mod:`connectors.kafka.codec`, and in the README (Kafka as the backbone).

Reading copyjob's topics from your own program::

    from copyjob.connectors.kafka import open_decoder

    decoder = open_decoder("localhost:9092", "shop")          # + schema_registry_url=… when one is used
    event = decoder.decode(msg.value(), msg.key(), msg.headers())
    event.op, event.before, event.after, event.source, event.key   # typed Python values

Everything heavy (confluent_kafka, fastavro) is imported on first use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from copyjob.connectors.kafka.codec import DecodedMessage, Decoder, Lookup, SourceInfo
from copyjob.connectors.kafka.naming import legal_topic

from copyjob.core.schema import TableName
from copyjob.core.urls import ConnectionUrl

__all__ = ["DecodedMessage", "Decoder", "decode_message", "dlq_topic", "open_decoder", "schema_topic_name",
           "source_info", "topic_name", "topic_of"]
DEFAULT_SCHEMA = {"postgresql": "public"}
"""A source table's schema when its name has none, per system (else the database for MySQL/MariaDB, else
``main``)."""


def topic_name(prefix: str, schema: str, table: str) -> str:
    """The topic of a source table: ``<prefix>.<schema>.<table>``, made legal (:mod:`.naming`: characters
    outside ``[a-zA-Z0-9._-]`` become ``_``, as Debezium does)."""
    return legal_topic(f"{prefix}.{schema}.{table}")


def source_info(url: ConnectionUrl, table: TableName) -> SourceInfo:
    """The envelope's source block for a table: the schema is the table's, else the system's default."""
    db = url.database or (url.path.stem if url.path else "") or url.scheme
    schema = table.schema or DEFAULT_SCHEMA.get(url.scheme) or (url.database if url.scheme in (
        "mysql", "mariadb") else None) or "main"
    return SourceInfo(connector=url.scheme, db=db, schema=schema, table=table.name)


def topic_of(prefix: str, info: SourceInfo) -> str:
    """The topic of the table that ``info`` (:func:`source_info`) describes."""
    return topic_name(prefix, info.schema or "main", info.table)


def schema_topic_name(prefix: str) -> str:
    return f"{prefix}._schemas"


def dlq_topic(prefix: str, table: str) -> str:
    """The dead-letter topic of a destination table: ``<prefix>.<table>.dlq``, made legal as :func:`topic_name`."""
    return legal_topic(f"{prefix}.{table}", suffix=".dlq")


def open_decoder(bootstrap_servers: str, topic_prefix: str, schema_registry_url: str = "",
                 config: Mapping[str, Any] | None = None) -> Decoder:
    """A decoder for every format copyjob writes; it fetches writers' schemas from the schema topic (and the
    registry, when given) as it meets them."""
    from copyjob.connectors.kafka.schemas import RegistryClient, Schemas, SchemaTopic

    topic = SchemaTopic(bootstrap_servers, config or {}, topic_prefix)
    registry = RegistryClient(schema_registry_url) if schema_registry_url else None
    return Decoder(Schemas(topic, registry))


def decode_message(value: bytes | None, key: bytes | None = None,
                   headers: Sequence[tuple[str, bytes | None]] | None = None, *,
                   decoder: Decoder | None = None, schemas: Mapping[int, str] | None = None) -> DecodedMessage:
    """Decode one message with ``decoder``, or with a fixed map of schemas (fingerprint or registry id → schema
    JSON) when you keep them yourself."""
    if decoder is None:
        decoder = Decoder(_FixedSchemas(schemas or {}))
    return decoder.decode(value, key, headers)


class _FixedSchemas(Lookup):
    def __init__(self, schemas: Mapping[int, str]) -> None:
        self._schemas = schemas

    def by_fingerprint(self, fp: int) -> str | None:
        return self._schemas.get(fp)

    def by_id(self, schema_id: int) -> str | None:
        return self._schemas.get(schema_id)
