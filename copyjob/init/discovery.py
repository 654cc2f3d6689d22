"""What a source has, read from its catalog: per table its columns, a row estimate, its indexes and the
columns the system numbers in increasing order; for folders and S3, the files grouped into file sets."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import cast

from copyjob.core.contracts import FileFormat, FileInfo, FileSetSource, IndexInfo, Source
from copyjob.core.paths import COMPRESSION_SUFFIXES, FORMAT_SUFFIXES
from copyjob.core.schema import TableName, TableSchema
from copyjob.core.urls import ConnectionUrl

_DEFAULT_SCHEMAS = {"postgresql": "public", "duckdb": "main", "sqlite": "main"}
_SERIAL_TAIL = re.compile(r"[-_.]?\d[\d_.-]*$")
"""A date or a sequence number ending a file name (``orders_2024-05-01``): files that differ only there are
one set."""


@dataclass(frozen=True)
class FoundTable:
    """A table (or a set of files) of the source, as the job file names it."""

    name: str
    schema: TableSchema | None = None
    rows: int | None = None
    indexes: tuple[IndexInfo, ...] = ()
    increasing: tuple[str, ...] = ()
    pattern: str | None = None
    format: FileFormat | None = None
    files: int = 0


def discover(source: Source, url: ConnectionUrl, patterns: Sequence[str] = ()) -> list[FoundTable]:
    """The source's tables (or file sets) whose job-file name matches one of ``patterns`` (all when none)."""
    if source.capabilities.files:
        found = file_sets(cast(FileSetSource, source).list_files("**"))
    else:
        names = sorted(job_name(t, url) for t in source.table_names() if _own(t, url))
        found = [_table(source, name) for name in names if selected(name, patterns)]
    return [t for t in found if selected(t.name, patterns)]  # file sets are named only once grouped


def selected(name: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def job_name(table: TableName, url: ConnectionUrl) -> str:
    """``orders`` for a table in the default schema (PostgreSQL's public, the URL's MySQL database), else
    ``schema.orders``."""
    default = url.database if url.scheme in ("mysql", "mariadb") else _DEFAULT_SCHEMAS.get(url.scheme)
    return table.name if table.schema in (None, default) else f"{table.schema}.{table.name}"


def _own(table: TableName, url: ConnectionUrl) -> bool:
    """MySQL lists every database the user sees: keep the URL's."""
    return url.scheme not in ("mysql", "mariadb") or not url.database or table.schema == url.database


def _table(source: Source, name: str) -> FoundTable:
    table = TableName.parse(name)
    return FoundTable(name=name, schema=source.reflect(table), rows=source.estimate_rows(table),
                      indexes=tuple(source.indexes(table)), increasing=source.increasing_columns(table))


def file_sets(files: Sequence[FileInfo]) -> list[FoundTable]:
    """Files grouped by folder, name (without a trailing date or number) and format: one set each."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    formats: dict[tuple[str, str, str], FileFormat] = {}
    for file in files:
        split = _split_suffix(PurePosixPath(file.path).name)
        if split is None:
            continue  # a format copyjob does not read
        stem, suffix, fmt = split
        key = (str(PurePosixPath(file.path).parent), _SERIAL_TAIL.sub("", stem), suffix)
        groups.setdefault(key, []).append(stem)
        formats[key] = fmt
    found = []
    for key in sorted(groups):
        folder, stem, suffix = key
        stems = groups[key]
        # a set (or one dated file, which will have successors) is a glob; a lone plain file its own name
        glob = f"{stem}{suffix}" if stems == [stem] else f"{stem}*{suffix}"
        found.append(FoundTable(name=_name(folder, stem), pattern=glob if folder == "." else f"{folder}/{glob}",
                                format=formats[key], files=len(stems)))
    return _unique_names(found)


def _split_suffix(filename: str) -> tuple[str, str, FileFormat] | None:
    lower = filename.lower()
    compression = next((c for c in COMPRESSION_SUFFIXES if lower.endswith(c)), "")
    base = lower[: len(lower) - len(compression)]
    for suffix, fmt in FORMAT_SUFFIXES.items():
        if base.endswith(suffix):
            cut = len(filename) - len(compression) - len(suffix)
            return filename[:cut], filename[cut:], fmt
    return None


def _name(folder: str, stem: str) -> str:
    """A table name from the set's folder and file name: letters, digits and underscores."""
    parts = [p for p in (*([] if folder == "." else folder.split("/")), stem) if p]
    text = "_".join(parts) if stem or not parts else parts[-1]
    return re.sub(r"\W+", "_", text).strip("_").lower() or "files"


def _unique_names(found: list[FoundTable]) -> list[FoundTable]:
    seen: dict[str, int] = {}
    out = []
    for t in found:
        n = seen.get(t.name, 0)
        seen[t.name] = n + 1
        out.append(t if n == 0 else replace(t, name=f"{t.name}_{n + 1}"))
    return out
