"""File sets in the job file: which URLs are file sources, the format a pattern implies, the :class:`FileSet`
of a table entry, and connection URLs that carry an endpoint's ``options`` (S3 endpoint and credentials)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from copyjob.core.contracts import FileFormat, FileSet
from copyjob.core.urls import ConnectionUrl, parse_url

if TYPE_CHECKING:
    from copyjob.jobfile import Endpoint, TableSpec

FILE_SCHEMES = frozenset({"file", "s3"})
"""URL schemes whose tables are sets of files (and which, as a destination, write files)."""
FORMAT_SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
"""Read transparently (pyarrow detects the codec from the suffix); not for Parquet, which compresses inside."""


def is_file_url(url: str) -> bool:
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in FILE_SCHEMES


def format_from_pattern(pattern: str) -> FileFormat | None:
    """``*.csv`` → csv, ``**/*.jsonl.gz`` → jsonl; None when the suffix says nothing (``*``, ``*.txt``)."""
    name = pattern.rsplit("/", 1)[-1].lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix, fmt in FORMAT_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def file_set(spec: TableSpec) -> FileSet:
    """The file set a table entry names. The loader has checked that ``pattern`` is there and the format is
    known, so a ValueError here is a programming error."""
    from copyjob.jobfile import CsvOptions

    fmt = spec.format or (format_from_pattern(spec.pattern) if spec.pattern else None)
    if spec.pattern is None or fmt is None:
        raise ValueError(f"table {spec.name}: a file set needs pattern and a known format")
    return FileSet(name=spec.name, pattern=spec.pattern, format=fmt, csv=spec.csv or CsvOptions(),
                   source_file_column=spec.source_file_column)


def endpoint_url(endpoint: Endpoint, base_dir: Path | None) -> ConnectionUrl:
    """The endpoint's URL, parsed. For file and S3 URLs the endpoint's ``options`` and ``format`` ride along in
    ``query`` (the connectors read them there); secrets never enter ``raw``, so messages cannot show them."""
    url = parse_url(endpoint.url, base_dir)
    if url.scheme not in FILE_SCHEMES:
        return url
    extra = dict(endpoint.options)
    if endpoint.format:
        extra["format"] = endpoint.format
    return replace(url, query={**url.query, **extra})
