"""File sets in the job file: which URLs are file sources, the format a pattern implies, the :class:`FileSet`
of a table entry, and connection URLs that carry an endpoint's ``options`` (S3 endpoint and credentials).

Patterns stay inside their root: a pattern is relative to the source folder (or S3 prefix, or trigger folder),
and a ``..`` segment or an absolute pattern is refused when the job file is loaded (:mod:`copyjob.core.paths`).
Local folders follow RFC 8089 (:func:`copyjob.core.urls.parse_file_url`): ``file:///data/in`` is ``/data/in``;
a folder beside the job file is ``./inbox`` or ``file:inbox``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from copyjob.core.contracts import FileFormat, FileSet
from copyjob.core.paths import COMPRESSION_SUFFIXES, FOLLOW_SYMLINKS_OUTSIDE, FORMAT_SUFFIXES
from copyjob.core.urls import ConnectionUrl, parse_url, scheme_of

if TYPE_CHECKING:
    from copyjob.jobfile import Endpoint, TableSpec

FILE_SCHEMES = frozenset({"file", "s3"})
"""URL schemes whose tables are sets of files (and which, as a destination, write files)."""


def is_file_url(url: str) -> bool:
    return scheme_of(url) in FILE_SCHEMES


def legacy_relative_problem(url: str, base_dir: Path) -> str | None:
    """A ``file:///x`` URL written when copyjob read it relative to the job file: ``/x`` does not exist but
    ``x`` beside the job file does. Said plainly instead of reading (or creating) ``/x``."""
    if url[:8].lower() != "file:///" or url[8:9] == "/":
        return None
    path = parse_url(url, base_dir).path
    if path is None or path.exists():
        return None
    beside = base_dir / path.relative_to(path.anchor)
    if beside == path or not beside.exists():
        return None
    rel = path.relative_to(path.anchor).as_posix()
    return (f"{url} is the absolute folder {path.as_posix()} (RFC 8089), which does not exist; "
            f"for the folder beside the job file ({beside}) write ./{rel} or file:{rel}")


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
    if endpoint.follow_symlinks_outside:
        extra[FOLLOW_SYMLINKS_OUTSIDE] = "true"
    return replace(url, query={**url.query, **extra})
