"""Where a Delta destination's tables live: the root folder or S3 prefix (opened with the file connector's
:func:`open_root`, which checks it and reads the S3 options), one table folder per job table, and the storage
options delta-rs needs to reach S3 with the same settings."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace

from copyjob.connectors.files.filesystem import Root, open_root

from copyjob.core.contracts import PARTITION_BY_OPTION
from copyjob.core.errors import ConfigurationError
from copyjob.core.urls import ConnectionUrl


@dataclass(frozen=True)
class Lake:
    root: Root
    storage_options: dict[str, str]
    partition_by: dict[str, tuple[str, ...]]
    """Partition columns by target table name (the job file's ``partition_by:``)."""

    def folder(self, table: str) -> str:
        """The table's folder below the root: its name as one path segment, so no name leads outside it."""
        return folder_name(table)

    def uri(self, table: str) -> str:
        full = self.root.full(self.folder(table))
        return full if self.root.local else f"s3://{full}"


_KEPT = " ._-+=,@()'\""


def folder_name(table: str) -> str:
    """A table name as one folder name: letters, digits, spaces and ``._-+=,@()'"`` stay, anything else
    (``/``, backslash, ``%``, ``~``, ``#``, ``?``, control characters) becomes ``~`` and its UTF-8 bytes in hex; a
    name of dots only is written the same way. Not percent-encoding: delta-rs reads table paths as URLs and
    would decode it."""
    name = "".join(ch if ch.isalnum() or ch in _KEPT else "".join(f"~{b:02x}" for b in ch.encode()) for ch in table)
    if not name.strip("."):
        name = "".join(f"~{ord(ch):02x}" for ch in name) or "~"
    return name


def open_lake(url: ConnectionUrl) -> Lake:
    query = dict(url.query)
    partitions = _partition_by(query.pop(PARTITION_BY_OPTION, None))
    root = open_root(replace(url, query=query), create=True)
    return Lake(root, {} if root.local else _s3_storage_options(query), partitions)


def _partition_by(text: str | None) -> dict[str, tuple[str, ...]]:
    if not text:
        return {}
    try:
        doc = json.loads(text)
        return {str(t): tuple(str(c) for c in cols) for t, cols in doc.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ConfigurationError(f"{PARTITION_BY_OPTION} must map table names to column lists: {text!r}") from exc


def _s3_storage_options(query: dict[str, str]) -> dict[str, str]:
    """delta-rs's object-store settings from the endpoint's options, else the environment (as pyarrow's S3
    file system reads them in :func:`open_root`)."""
    out: dict[str, str] = {}
    endpoint = (query.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    if endpoint:
        out["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            out["AWS_ALLOW_HTTP"] = "true"
    region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    out["AWS_REGION"] = region or "us-east-1"
    for option, key in (("access_key", "AWS_ACCESS_KEY_ID"), ("secret_key", "AWS_SECRET_ACCESS_KEY"),
                        ("session_token", "AWS_SESSION_TOKEN")):
        if query.get(option):
            out[key] = query[option]
    # one writer per table (copyjob's run lock): S3's rename is not atomic, and no locking service is needed
    out["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"
    return out
