"""Connectors, one module or folder per system, registered here in one place and imported lazily.

``open_source(url)`` and ``open_destination(url)`` pick the connector by the URL's scheme; the connector's
module (and its driver: psycopg, pymysql, duckdb, pyarrow) is imported only then, so ``copyjob --help``
stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from copyjob.core.errors import ConfigurationError

if TYPE_CHECKING:
    from copyjob.core.contracts import Destination, DestinationCapabilities, Source
    from copyjob.core.urls import ConnectionUrl

# scheme -> (module, source class or None, destination class or None)
REGISTRY: dict[str, tuple[str, str | None, str | None]] = {
    "sqlite": ("copyjob.connectors.sqlite", "SqliteSource", "SqliteDestination"),
    "postgresql": ("copyjob.connectors.postgres", "PostgresSource", "PostgresDestination"),
    "mysql": ("copyjob.connectors.mysql", "MysqlSource", "MysqlDestination"),
    "mariadb": ("copyjob.connectors.mysql", "MysqlSource", "MysqlDestination"),
    "duckdb": ("copyjob.connectors.duckdb", "DuckdbSource", "DuckdbDestination"),
    "parquet": ("copyjob.connectors.parquet", None, "ParquetDestination"),
    "file": ("copyjob.connectors.files", "FileSource", "FileDestination"),
    "s3": ("copyjob.connectors.files", "FileSource", "FileDestination"),
    "kafka": ("copyjob.connectors.kafka.topic_source", "KafkaTopicSource", None),
}
TABLE_FORMATS: dict[str, tuple[str, str]] = {
    "delta": ("copyjob.connectors.delta", "DeltaDestination"),
    "iceberg": ("copyjob.connectors.iceberg", "IcebergDestination"),
}
"""Lakehouse table formats: a file:// or s3:// destination whose ``format`` (in the URL's query, see
copyjob.filesets.endpoint_url) names one of these writes tables of that format instead of files."""


def _load(url: ConnectionUrl, role: str) -> type:
    table_format = TABLE_FORMATS.get(url.query.get("format", "")) if url.scheme in ("file", "s3") else None
    if table_format is not None:
        if role != "destination":
            raise ConfigurationError(f"{url.query['format']} tables can only be a destination")
        found: type = getattr(importlib.import_module(table_format[0]), table_format[1])
        return found
    entry = REGISTRY.get(url.scheme)
    if entry is None:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigurationError(f"unknown URL scheme {url.scheme!r} (known: {known})")
    module_name, source_cls, dest_cls = entry
    cls_name = source_cls if role == "source" else dest_cls
    if cls_name is None:
        raise ConfigurationError(f"{url.scheme}:// cannot be used as a {role}")
    module = importlib.import_module(module_name)
    cls: type = getattr(module, cls_name)
    return cls


def open_source(url: ConnectionUrl) -> Source:
    """Connect to a source system. Raises ConnectionFailed / AuthenticationFailed."""
    return _load(url, "source")(url)


def open_destination(url: ConnectionUrl) -> Destination:
    """Connect to a destination system (creating an embedded database file when missing)."""
    return _load(url, "destination")(url)


def destination_capabilities(url: ConnectionUrl) -> DestinationCapabilities:
    """What a destination can do, without connecting to it."""
    caps: DestinationCapabilities = _load(url, "destination").capabilities  # type: ignore[attr-defined]
    return caps


def can_be(url: ConnectionUrl, role: str) -> bool:
    entry = REGISTRY.get(url.scheme)
    return entry is not None and (entry[1] if role == "source" else entry[2]) is not None
