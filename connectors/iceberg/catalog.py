"""The Iceberg catalog and warehouse of a destination, from its URL and ``options`` (in ``url.query``).

Options:

- ``catalog``: ``sql`` (default) or ``rest``;
- ``catalog_uri``: sql: a SQLAlchemy URL, ``sqlite:///…`` or ``postgresql://user:pw@host/db`` (default: the
  SQLite file ``catalog.db`` in a local destination folder; an S3 destination must name one); rest: the
  server's URL (required);
- ``namespace``: the namespace of tables whose target names none (default ``copyjob``);
- ``partition_by`` (set by the job file's per-table ``partition_by:``): JSON, target table → columns;
- ``catalog.<property>``: passed to pyiceberg's catalog as ``<property>`` (``catalog.token``, ``catalog.credential``);
- S3 (``s3://bucket/prefix``): ``endpoint_url``, ``access_key``, ``secret_key``, ``session_token``, ``region``
  as for file destinations (else the ``AWS_*`` environment), mapped to pyiceberg's ``s3.*`` properties.

The warehouse (where data and metadata files go) is the destination's folder or prefix. Passwords in catalog
URIs never reach a message: every error text passes through :func:`copyjob.core.redaction.redact`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from copyjob.connectors.files.filesystem import S3_OPTIONS

from copyjob.core.contracts import PARTITION_BY_OPTION
from copyjob.core.errors import ConfigurationError, ConnectionFailed
from copyjob.core.private import make_private_folder
from copyjob.core.redaction import redact
from copyjob.core.urls import ConnectionUrl

CATALOG_OPTIONS = ("catalog", "catalog_uri", "namespace")
URL_OPTIONS = ("format", PARTITION_BY_OPTION)
DEFAULT_NAMESPACE = "copyjob"
CATALOG_FILE = "catalog.db"
_PROPERTY_PREFIX = "catalog."


@dataclass(frozen=True)
class CatalogSettings:
    kind: str
    uri: str
    warehouse: str
    namespace: str
    display: str
    """The destination as messages name it (no credentials)."""
    properties: dict[str, str]
    """Everything else pyiceberg's catalog is given (S3 properties, ``catalog.*`` options)."""
    partition_by: dict[str, tuple[str, ...]]
    """Per target table (as the job file names it): the columns a new table is partitioned by."""


def settings(url: ConnectionUrl) -> CatalogSettings:
    """Read and check the destination's options (ConfigurationError for unknown or missing ones)."""
    q = url.query
    unknown = sorted(k for k in q if k not in (*CATALOG_OPTIONS, *URL_OPTIONS, *S3_OPTIONS)
                     and not k.startswith(_PROPERTY_PREFIX))
    if unknown:
        raise ConfigurationError(f"unknown option(s) {', '.join(unknown)} for the Iceberg destination {url} (known: "
                                 f"{', '.join(CATALOG_OPTIONS + S3_OPTIONS)}, catalog.<property>)")
    kind = q.get("catalog", "sql")
    if kind not in ("sql", "rest"):
        raise ConfigurationError(f"catalog: {kind!r} is not an Iceberg catalog copyjob opens (sql, rest) in {url}")
    properties = {k[len(_PROPERTY_PREFIX):]: v for k, v in q.items() if k.startswith(_PROPERTY_PREFIX)}
    if url.scheme == "s3":
        if not url.host:
            raise ConfigurationError(f"s3:// needs a bucket: {url}")
        prefix = (url.database or "").strip("/")
        warehouse = f"s3://{url.host}/{prefix}".rstrip("/")
        display = warehouse
        properties.update(_s3_properties(q, url))
        default_uri = None
    else:
        if url.path is None:
            raise ConfigurationError(f"an Iceberg destination needs a folder: {url}")
        try:
            make_private_folder(url.path)
        except OSError as exc:
            raise ConnectionFailed(f"cannot create the Iceberg folder {url.path}: {exc}") from exc
        warehouse = url.path.resolve().as_uri()
        display = str(url.path)
        default_uri = f"sqlite:///{url.path.resolve() / CATALOG_FILE}" if kind == "sql" else None
    uri = q.get("catalog_uri") or default_uri
    if not uri:
        raise ConfigurationError(f"the Iceberg destination {url} needs options: catalog_uri: (the {kind} catalog's "
                                 "URL" + (", e.g. postgresql://user:pw@host/db)" if kind == "sql" else ")"))
    if kind == "sql" and uri.startswith(("postgresql://", "postgres://")):
        uri = "postgresql+psycopg://" + uri.split("://", 1)[1]  # SQLAlchemy's driver: psycopg 3, installed
    return CatalogSettings(kind, uri, warehouse, q.get("namespace") or DEFAULT_NAMESPACE, display, properties,
                           _partition_by(q.get(PARTITION_BY_OPTION)))


def _partition_by(text: str | None) -> dict[str, tuple[str, ...]]:
    if not text:
        return {}
    try:
        doc = json.loads(text)
        return {str(t): tuple(str(c) for c in columns) for t, columns in doc.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ConfigurationError(f"{PARTITION_BY_OPTION} must map table names to column lists: {text!r}") from exc


def _s3_properties(q: dict[str, str], url: ConnectionUrl) -> dict[str, str]:
    props: dict[str, str] = {}
    endpoint = q.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        props["s3.endpoint"] = endpoint
    region = q.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        props["s3.region"] = region
    if q.get("access_key") or q.get("secret_key"):
        if not (q.get("access_key") and q.get("secret_key")):
            raise ConfigurationError(f"give both access_key and secret_key for {url}")
        props["s3.access-key-id"] = q["access_key"]
        props["s3.secret-access-key"] = q["secret_key"]
        if q.get("session_token"):
            props["s3.session-token"] = q["session_token"]
    return props


def open_catalog(s: CatalogSettings) -> Any:
    """pyiceberg's catalog (imported here, when a destination is opened). Raises ConnectionFailed, redacted."""
    name = "copyjob"
    props = {**s.properties, "uri": s.uri, "warehouse": s.warehouse}
    try:
        if s.kind == "rest":
            from pyiceberg.catalog.rest import RestCatalog

            return RestCatalog(name, **props)
        from pyiceberg.catalog.sql import SqlCatalog

        return SqlCatalog(name, **props)
    except Exception as exc:
        raise ConnectionFailed(f"cannot open the Iceberg {s.kind} catalog {redact(s.uri)} for {s.display}: "
                               f"{redact(' '.join(str(exc).split()))}") from exc
