"""The support matrix: which mode × source × destination × transport × update method a job may combine.

:data:`SUPPORTED` is the one table. Each row is a product: every combination of its modes, sources,
destinations, transports and update methods works; a combination no row covers is not supported. What the
rows say comes from the code, not from wishes:

- ``cdc`` needs a source with a change log reader (:data:`copyjob.ingest.LOG_SOURCES`: PostgreSQL, MySQL/MariaDB);
  a file/s3 source copies incrementally by modification time instead; a ``kafka://`` source's topics are change
  events already (copyjob.topic_source), applied as ``cdc`` by the apply side in this process (``direct``);
- ``overwrite`` replaces the table in the load's one transaction, so it needs mode ``full`` (an incremental
  or change load is not the whole table) and transport ``direct`` (:func:`copyjob.kafka_capture.
  check_kafka_tables`: a stream of events cannot replace a table);
- ``merge`` (and with it the deletes and truncates of ``cdc``) needs a keyed destination
  (``DestinationCapabilities.supports_merge``): every database, and Parquet folders, which rewrite the table;
  a file/s3 destination writes one file per source file and has no key.

Systems are named by *kind* (:data:`KIND_OF_SCHEME`, one per scheme of the connector registry). :func:`check`
is run by the loader, so ``copyjob validate`` and ``copyjob run`` refuse a combination before anything is
opened, with the line of the key to change and what would work instead. :func:`render_markdown` prints the
table for the documentation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING, NamedTuple

from copyjob.core.urls import SCHEME_ALIASES, scheme_of
from copyjob.jobfile import resolve_tables

if TYPE_CHECKING:
    from copyjob.jobfile import Job, ResolvedTable

__all__ = ["KIND_OF_SCHEME", "SUPPORTED", "Combination", "Problem", "Row", "check", "combinations", "kind_of",
           "render_markdown", "supported"]

Key = tuple[str | int, ...]
"""A place in the job file, as the loader names it: ``("tables", 0, "mode")``."""

KIND_OF_SCHEME: dict[str, str] = {
    "postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite", "duckdb": "duckdb",
    "file": "files", "s3": "files", "parquet": "parquet", "kafka": "kafka",
}
"""URL scheme (after :data:`copyjob.core.urls.SCHEME_ALIASES`) → the kind of system the matrix speaks of."""
TABLE_FORMAT_KINDS = ("delta", "iceberg")
"""Lakehouse table formats: a file/s3 destination with ``format: delta|iceberg`` is of that kind."""
_LABEL = {"postgresql": "postgresql", "mysql": "mysql/mariadb", "sqlite": "sqlite", "duckdb": "duckdb",
          "files": "file/s3", "parquet": "parquet", "kafka": "kafka", "delta": "delta", "iceberg": "iceberg"}

DATABASES = ("postgresql", "mysql", "sqlite", "duckdb")
ANY_SOURCE = (*DATABASES, "files")
LOG_SOURCES = ("postgresql", "mysql")
"""Sources whose change log copyjob reads (copyjob.ingest.LOG_SOURCES)."""
TOPICS = ("kafka",)
"""A broker whose topics of change events are applied (copyjob.topic_source): mode cdc, since they are changes."""
KEYED = (*DATABASES, "parquet", *TABLE_FORMAT_KINDS)
"""Destinations that merge and delete by key."""
FILES = ("files",)
DIRECT, KAFKA, BOTH = ("direct",), ("kafka",), ("direct", "kafka")


@dataclass(frozen=True)
class Row:
    """Supported: every combination of these values (each field a tuple of values of that axis)."""

    mode: tuple[str, ...]
    source: tuple[str, ...]
    destination: tuple[str, ...]
    transport: tuple[str, ...]
    update_method: tuple[str, ...]
    note: str = ""


SUPPORTED: tuple[Row, ...] = (
    #    mode              source       destination  transport  update_method
    Row(("full",),         ANY_SOURCE,  KEYED,       DIRECT,    ("append", "overwrite", "merge"),
        "every row, every run; overwrite replaces the table in the load's transaction"),
    Row(("full",),         ANY_SOURCE,  KEYED,       KAFKA,     ("append", "merge"),
        "rows published as snapshot events; no overwrite: a stream of events cannot replace a table"),
    Row(("full",),         ANY_SOURCE,  FILES,       DIRECT,    ("append", "overwrite"),
        "files have no key: no merge"),
    Row(("full",),         ANY_SOURCE,  FILES,       KAFKA,     ("append",),
        "no key to merge on, no overwrite through a stream"),
    Row(("incremental",),  ANY_SOURCE,  KEYED,       BOTH,      ("append", "merge"),
        "rows past the incremental_column watermark; file/s3 sources: files by modification time"),
    Row(("incremental",),  ANY_SOURCE,  FILES,       BOTH,      ("append",),
        "files have no key: no merge"),
    Row(("cdc",),          LOG_SOURCES, KEYED,       BOTH,      ("append", "merge"),
        "PostgreSQL's WAL, the MySQL/MariaDB binlog; merge applies deletes and truncates, append adds every "
        "change as a row (_op, _position, _commit_ts)"),
    Row(("cdc",),          LOG_SOURCES, FILES,       BOTH,      ("append",), "every change as a row"),
    Row(("cdc",),          TOPICS,      KEYED,       DIRECT,    ("append", "merge"),
        "topics of change events (Debezium's Kafka Connect JSON, copyjob's avro/json): each table entry names a "
        "topic (or a ^pattern of topics) and its target; offsets committed in the destination with the data"),
)
"""The support matrix (see the module docstring). Rendered by :func:`render_markdown`."""

AXES = ("mode", "source", "destination", "transport", "update_method")
BLAME_ORDER = ("update_method", "mode", "transport", "destination", "source")
"""When a combination is not supported, the key blamed is the first in this order whose change alone would
make it supported: the settings of a table before the job's transport, and the systems last."""


class Combination(NamedTuple):
    mode: str
    source: str
    destination: str
    transport: str
    update_method: str


@dataclass(frozen=True)
class Problem:
    key: Key
    message: str


def kind_of(url: str) -> str | None:
    """The kind of system a URL names (``postgres://…`` → ``postgresql``), None when unknown."""
    scheme = scheme_of(url)  # file:inbox and plain paths (./inbox) are folders too
    return None if scheme is None else KIND_OF_SCHEME.get(scheme)


def supported(c: Combination, rows: Sequence[Row] = SUPPORTED) -> bool:
    return any(_covers(r, c) for r in rows)


def combinations(rows: Sequence[Row] = SUPPORTED) -> list[Combination]:
    """Every supported combination, once each."""
    seen = {Combination(*values) for r in rows for values in product(*(getattr(r, a) for a in AXES))}
    return sorted(seen)


def check(job: Job, rows: Sequence[Row] = SUPPORTED) -> list[Problem]:
    """The job's unsupported combinations, one problem per key to change (the first is what the loader reports)."""
    problems: list[Problem] = []
    kinds = {}
    for axis in ("source", "destination"):
        url: str = getattr(job, axis).url
        kind = kind_of(url)
        table_format = getattr(job, axis).format
        if kind == "files" and table_format in TABLE_FORMAT_KINDS:
            kind = table_format
        if kind is None:
            problems.append(Problem((axis, "url"), _unknown_url(url)))
        kinds[axis] = kind or ""
    if problems:
        return problems
    for t in resolve_tables(job):
        c = Combination(t.mode, kinds["source"], kinds["destination"], job.transport, t.update_method)
        if supported(c, rows):
            continue
        axis, alternatives = _blame(c, rows)
        problem = Problem(_key_of(job, t, axis), _explain(c, axis, alternatives, rows))
        if problem not in problems:
            problems.append(problem)
    return problems


def render_markdown(rows: Sequence[Row] = SUPPORTED) -> str:
    """The matrix as a Markdown table, then which URL schemes each kind covers."""
    lines = ["| mode | source | destination | transport | update_method | notes |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [", ".join(r.mode), _labels(r.source), _labels(r.destination), ", ".join(r.transport),
                 ", ".join(r.update_method), r.note]
        lines.append("| " + " | ".join(cells) + " |")
    schemes: dict[str, list[str]] = {}
    for scheme, kind in KIND_OF_SCHEME.items():
        schemes.setdefault(kind, []).append(f"`{scheme}://`")
    for table_format in TABLE_FORMAT_KINDS:
        schemes[table_format] = [f"`file://`, `s3://` with `format: {table_format}`"]
    legend = "; ".join(f"{_LABEL[k]}: {', '.join(s)}" for k, s in schemes.items())
    return "\n".join(lines) + f"\n\nKinds by URL scheme: {legend}. Anything not in a row is refused when the " \
        "job file is loaded.\n"


# ---------------------------------------------------------------- blame and explain


def _covers(r: Row, c: Combination) -> bool:
    return all(getattr(c, a) in getattr(r, a) for a in AXES)


def _values(axis: str, rows: Sequence[Row]) -> list[str]:
    """Every value of ``axis`` some row supports, in the order of the rows."""
    return list(dict.fromkeys(v for r in rows for v in getattr(r, axis)))


def _compatible(axis: str, value: str, other: str, other_value: str, rows: Sequence[Row]) -> bool:
    return any(value in getattr(r, axis) and other_value in getattr(r, other) for r in rows)


def _conflicts(c: Combination, axis: str, rows: Sequence[Row]) -> list[str]:
    """The other axes whose value no row supports together with ``c``'s value of ``axis``."""
    value = getattr(c, axis)
    return [b for b in AXES if b != axis and not _compatible(axis, value, b, getattr(c, b), rows)]


def _blame(c: Combination, rows: Sequence[Row]) -> tuple[str, list[str]]:
    """The axis to change, and the values it could take instead."""
    for axis in BLAME_ORDER:  # 1. a value no row has at all (parquet as a source)
        if getattr(c, axis) not in _values(axis, rows):
            return axis, _values(axis, rows)
    for axis in BLAME_ORDER:  # 2. the first key whose change alone makes the combination supported
        alternatives = [v for v in _values(axis, rows) if supported(c._replace(**{axis: v}), rows)]
        if alternatives:
            return axis, alternatives
    for axis in BLAME_ORDER:  # 3. the first key at odds with another one
        if _conflicts(c, axis, rows):
            return axis, [v for v in _values(axis, rows) if not _conflicts(c._replace(**{axis: v}), axis, rows)]
    return BLAME_ORDER[0], []


def _explain(c: Combination, axis: str, alternatives: list[str], rows: Sequence[Row]) -> str:
    value = getattr(c, axis)
    use = f"; use {_choice(axis, alternatives)}" if alternatives else ""
    if value not in _values(axis, rows):
        return f"{_LABEL.get(value, value)} cannot be a {axis}{use}"
    conflicts = _conflicts(c, axis, rows)
    if not conflicts:
        others = ", ".join(_named(b, getattr(c, b)) for b in AXES if b != axis)
        return f"{_subject(axis, value)} is not supported together with {others}{use}"
    needs = [_choice(b, [v for v in _values(b, rows) if _compatible(axis, value, b, v, rows)]) for b in conflicts]
    verb = "does" if len(conflicts) == 1 else "do"
    return (f"{_and(_named(b, getattr(c, b)) for b in conflicts)} {verb} not support {_subject(axis, value)} "
            f"({_subject(axis, value)} needs {_and(needs)}){use}")


def _subject(axis: str, value: str) -> str:
    """A value as the thing not supported: ``cdc``, ``merge``, ``transport kafka``, ``a parquet source``."""
    return value if axis in ("mode", "update_method") else _named(axis, value)


def _named(axis: str, value: str) -> str:
    if axis in ("source", "destination"):
        return f"a {_LABEL.get(value, value)} {axis}"
    return f"{axis} {value}"


def _choice(axis: str, values: Sequence[str]) -> str:
    if axis in ("source", "destination"):
        return f"a {_or(_LABEL.get(v, v) for v in values)} {axis}"
    return f"{axis} {_or(values)}"


def _labels(kinds: Iterable[str]) -> str:
    return ", ".join(_LABEL.get(k, k) for k in kinds)


def _or(items: Iterable[str]) -> str:
    return _join(list(items), "or")


def _and(items: Iterable[str]) -> str:
    return _join(list(items), "and")


def _join(items: list[str], word: str) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _key_of(job: Job, t: ResolvedTable, axis: str) -> Key:
    """The job file key that sets ``axis`` for table ``t``: the table's own, else the copy: section's, else where
    the table would set it."""
    if axis in ("source", "destination"):
        return (axis, "url")
    if axis == "transport":
        return ("transport",)
    if getattr(t.spec, axis) is None and axis in job.copy_settings.model_fields_set:
        return ("copy", axis)
    return ("tables", t.index, axis)


def _unknown_url(url: str) -> str:
    if "://" not in url:
        return "not a URL (expected scheme://…, e.g. sqlite:///shop.db)"
    scheme = url.partition("://")[0]
    known = ", ".join(sorted({*KIND_OF_SCHEME, *SCHEME_ALIASES}))
    return f"unknown URL scheme {scheme!r} (known: {known})"
