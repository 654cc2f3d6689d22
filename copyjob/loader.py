"""Loading a job file: YAML with line numbers (:mod:`copyjob.yamlfile`), variables resolved, validated by the model.

Every problem becomes one :class:`JobFileError` line ``file:line: field: problem``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from copyjob.core.errors import JobFileError
from copyjob.core.scope import state_scope
from copyjob.core.urls import identity
from copyjob.filesets import endpoint_url, format_from_pattern, is_file_url
from copyjob.jobfile import Job, ResolvedTable, resolve_tables
from copyjob.matrix import check as check_support
from copyjob.variables import VariableLibrary, load_library
from copyjob.yamlfile import PathKey, read_yaml

if TYPE_CHECKING:
    from copyjob.core.contracts import StateStore
    from copyjob.offsets.ledger import Ledger


@dataclass
class LoadedJob:
    """A validated job and where each of its fields came from."""

    job: Job
    path: Path
    lines: dict[PathKey, int] = field(default_factory=dict)
    env: str | None = None
    """The value set chosen with ``--env`` (None: only ``default``)."""

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @cached_property
    def destination_identity(self) -> str:
        """The destination's system and place, without credentials (:func:`copyjob.core.urls.identity`)."""
        return identity(endpoint_url(self.job.destination, self.base_dir))

    @cached_property
    def scope(self) -> str:
        """The key of this job's state in the state store: its name and its destination's identity, so that
        the same job deployed to two destinations (``--env dev``, ``--env prod``) keeps two states."""
        return state_scope(self.job.job, self.destination_identity)

    @property
    def cdc_tables(self) -> list[str]:
        """The targets of the job's cdc tables (they share one change stream and run together)."""
        return [t.spec.target_name for t in self.tables if t.mode == "cdc"]

    def ledger(self, store: StateStore) -> Ledger:
        """The positions of this job's tables in its destination, kept in ``store`` under the job's scope."""
        from copyjob.offsets.ledger import Ledger

        return Ledger(store, self.scope, self.job.job)

    @property
    def stream_name(self) -> str:
        """The job's name in the default names that live on the source or the broker (replication slot,
        publication, MySQL server id, Kafka consumer group and topic prefix): with ``--env``, the environment is
        part of it, so two environments never share a slot or a consumer group."""
        return f"{self.job.job}_{self.env}" if self.env else self.job.job

    @property
    def topic_prefix(self) -> str:
        """``kafka.topic_prefix``; by default ``copyjob`` (``copyjob.<env>`` with ``--env``: two environments
        that share a broker never publish into each other's topics)."""
        given = self.job.kafka.topic_prefix if self.job.kafka is not None else None
        return given or (f"copyjob.{self.env}" if self.env else "copyjob")

    @property
    def tables(self) -> list[ResolvedTable]:
        return resolve_tables(self.job)

    def line_of(self, key: PathKey) -> int | None:
        """Line of ``key`` or of its nearest ancestor that has one."""
        return _nearest(self.lines, key)

    def error(self, message: str, key: PathKey) -> JobFileError:
        return JobFileError(message, file=str(self.path), line=self.line_of(key), field=format_key(key))


def format_key(key: PathKey) -> str:
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _plain(node: Any, key: PathKey, library: VariableLibrary, file: str,
           lines: dict[PathKey, int]) -> Any:
    """Turn ruamel nodes into plain dicts/lists, substituting variables in strings."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v, (*key, str(k)), library, file, lines) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, (*key, i), library, file, lines) for i, v in enumerate(node)]
    if isinstance(node, str):
        return library.substitute(str(node), file=file, line=_nearest(lines, key), field_name=format_key(key))
    return node


def _nearest(lines: dict[PathKey, int], key: PathKey) -> int | None:
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return None


_FRIENDLY = {
    "extra_forbidden": "unknown key",
    "missing": "required but missing",
}


def load_job(path: Path, *, variables: Path | None = None, env: str | None = None) -> LoadedJob:
    """Read, resolve and validate a job file. Raises JobFileError (exit 2) with file, line and field."""
    path = path.resolve() if path.exists() else path
    doc, lines = read_yaml(path)
    if not isinstance(doc, Mapping):
        raise JobFileError("expected a mapping with job:, source:, destination:, tables:", file=str(path),
                           line=1)
    library = load_library(path, variables, env)
    plain = _plain(doc, (), library, str(path), lines)
    try:
        job = Job.model_validate(plain)
    except ValidationError as exc:
        raise _first_error(exc, path, lines, plain) from None
    loaded = LoadedJob(job=job, path=path, lines=lines, env=env)
    _check_semantics(loaded)
    return loaded


def _first_error(exc: ValidationError, path: Path, lines: dict[PathKey, int], doc: Any) -> JobFileError:
    errors = exc.errors()
    err = errors[0]
    loc: PathKey = tuple(p for p in err["loc"] if isinstance(p, str | int))
    msg = _FRIENDLY.get(err["type"], err["msg"])
    msg = msg.removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return JobFileError(msg + more, file=str(path), line=_nearest(lines, loc) or 1,
                        field=format_key(loc) or None)


def _check_semantics(loaded: LoadedJob) -> None:
    """Checks that need more than one field: mode/method combinations per table."""
    if loaded.job.transport == "kafka" and loaded.job.kafka is None:
        raise loaded.error("transport kafka needs a kafka: section with bootstrap_servers", ("transport",))
    unsupported = check_support(loaded.job)  # mode × source × destination × transport × method (copyjob.matrix)
    if unsupported:
        n = len(unsupported) - 1
        more = f" (and {n} more problem{'s' if n > 1 else ''})" if n else ""
        raise loaded.error(unsupported[0].message + more, unsupported[0].key)
    seen: set[str] = set()
    file_source = is_file_url(loaded.job.source.url)
    _check_endpoint_formats(loaded)
    for t in loaded.tables:
        base: PathKey = ("tables", t.index)
        _check_file_fields(loaded, t, file_source)
        if t.spec.target_name in seen:
            raise loaded.error(f"two tables write to the same target {t.spec.target_name!r}",
                               (*base, "target") if t.spec.target else (*base, "name"))
        seen.add(t.spec.target_name)
        if t.mode == "incremental" and not t.spec.incremental_column and not file_source:
            raise loaded.error("required when mode is incremental (the column whose growth marks new rows)",
                               (*base, "incremental_column"))
        if t.spec.columns:
            targets = list(t.spec.columns.values())
            if len(set(targets)) != len(targets):
                raise loaded.error("two columns renamed to the same name", (*base, "columns"))


def _check_endpoint_formats(loaded: LoadedJob) -> None:
    if loaded.job.source.format is not None:
        raise loaded.error("a file source gives the format per table entry (tables[].format)", ("source", "format"))
    if loaded.job.destination.format is not None and not is_file_url(loaded.job.destination.url):
        raise loaded.error("only for file destinations (file://, s3://)", ("destination", "format"))


def _check_file_fields(loaded: LoadedJob, t: ResolvedTable, file_source: bool) -> None:
    """A file source's entries name sets of files (pattern, format, csv); a database's entries name tables."""
    base: PathKey = ("tables", t.index)
    spec = t.spec
    if not file_source:
        for name in ("pattern", "format", "csv"):
            if getattr(spec, name) is not None:
                raise loaded.error("only for file sources (file://, s3://); this source has tables", (*base, name))
        if spec.source_file_column:
            raise loaded.error("only for file sources (file://, s3://)", (*base, "source_file_column"))
        return
    if spec.pattern is None:
        raise loaded.error('required for a file source: which files, e.g. "*.csv" or "**/*.parquet"',
                           (*base, "pattern"))
    if spec.incremental_column:
        raise loaded.error("files are copied incrementally by their modification time: remove it",
                           (*base, "incremental_column"))
    fmt = spec.format or format_from_pattern(spec.pattern)
    if fmt is None:
        raise JobFileError(f"cannot tell the format from the pattern {spec.pattern!r}: add format: csv, jsonl "
                           "or parquet", file=str(loaded.path), line=loaded.line_of((*base, "pattern")),
                           field=format_key((*base, "format")))
    if spec.csv is not None and fmt != "csv":
        raise loaded.error(f"csv options for a {fmt} file set", (*base, "csv"))
