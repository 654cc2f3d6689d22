"""``kafka://host:port`` as a source: the broker whose topics of change events a job applies.

There are no tables to read here: a ``kafka://`` source's entries name topics, and the apply side
(copyjob.apply.kafka_apply, routed by copyjob.engine) consumes them. This connector answers what a source is
asked before that (which topics exist, so a misspelt one is caught) and refuses reads with a clear error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from copyjob.core.contracts import SourceCapabilities
from copyjob.core.errors import ConfigurationError
from copyjob.core.schema import TableName, TableSchema

if TYPE_CHECKING:
    from copyjob.core.urls import ConnectionUrl

DEFAULT_PORT = 9092


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
        from copyjob.connectors.kafka.client import Admin

        topics = Admin(self.bootstrap_servers, {}).existing_topics()
        return [TableName(t) for t in sorted(topics) if not t.startswith("__")]

    def reflect(self, table: TableName) -> TableSchema:
        raise ConfigurationError(f"{self.url}: a kafka:// source has topics, not tables: its events carry their "
                                 "columns and are applied by copyjob run/apply/stream")

    def read(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError(f"{self.url}: a kafka:// source is applied from its topics, never read as a table")

    def close(self) -> None:
        """Nothing held open: the apply side opens its own consumer."""
