"""``kafka://host:port`` as a source: the broker whose topics of change events a job applies.

There are no tables to read here: a ``kafka://`` source's entries name topics, and the apply side
(copyjob.apply.kafka_apply, routed by copyjob.engine) consumes them. This connector answers what a source is
asked before that (which topics exist, so a misspelt one is caught; which ones a pattern may match; how far each
partition reaches) and refuses reads with a clear error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from copyjob.core.contracts import SourceCapabilities
from copyjob.core.errors import ConfigurationError
from copyjob.core.schema import TableName, TableSchema

if TYPE_CHECKING:
    from copyjob.core.urls import ConnectionUrl

DEFAULT_PORT = 9092
_INTERNAL_SUFFIXES = ("._schemas", ".transaction", ".dlq")
"""copyjob's schema topics, Debezium's transaction metadata, copyjob's dead letters."""


def is_internal(topic: str) -> bool:
    """A topic no table pattern matches: Kafka's and Debezium's own (``__consumer_offsets``,
    ``__debezium-heartbeat.*``), a schema registry's ``_schemas``, copyjob's ``<prefix>._schemas`` and dead
    letters ``*.dlq``, Debezium's ``<prefix>.transaction``."""
    return topic.startswith("__") or topic == "_schemas" or topic.endswith(_INTERNAL_SUFFIXES)


def list_topics(bootstrap: str, config: Mapping[str, Any]) -> set[str]:
    """Every topic on the broker, internal ones included (retried while the broker is not there yet)."""
    from copyjob.connectors.kafka.client import Admin

    return Admin(bootstrap, config).existing_topics()


def watermarks(bootstrap: str, config: Mapping[str, Any],
               topics: Iterable[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """Per partition of ``topics`` (those that exist), its log start and end offsets; read-only, no group."""
    from copyjob.connectors.kafka.client import Admin, kafka_module, open_consumer, translate

    ck = kafka_module()
    admin = Admin(bootstrap, config)
    consumer = open_consumer(bootstrap, config, group_id="copyjob-offsets")
    out = {}
    try:
        for topic in topics:
            for p in admin.partitions(topic):
                try:
                    low, high = consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10, cached=False)
                except ck.KafkaException as exc:
                    raise translate(exc, f"reading the offsets of {topic}") from exc
                out[(topic, p)] = (int(low), int(high))
    finally:
        consumer.close()
    return out


def bootstrap_servers(url: ConnectionUrl) -> str:
    """``host:port`` of a ``kafka://`` URL (port 9092 when none is given)."""
    return f"{url.host or '127.0.0.1'}:{url.port or DEFAULT_PORT}"


class KafkaTopicSource:
    """The broker of a ``kafka://`` source."""

    capabilities = SourceCapabilities()

    def __init__(self, url: ConnectionUrl) -> None:
        self.url = url
        self.bootstrap_servers = bootstrap_servers(url)

    def table_names(self) -> list[TableName]:
        """The broker's topics (a tables entry names one), internal ones left out."""
        topics = list_topics(self.bootstrap_servers, {})
        return [TableName(t) for t in sorted(topics) if not t.startswith("__")]

    def reflect(self, table: TableName) -> TableSchema:
        raise ConfigurationError(f"{self.url}: a kafka:// source has topics, not tables: its events carry their "
                                 "columns and are applied by copyjob run/apply/stream")

    def read(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError(f"{self.url}: a kafka:// source is applied from its topics, never read as a table")

    def close(self) -> None:
        """Nothing held open: the apply side opens its own consumer."""
