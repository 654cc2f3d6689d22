"""Loading a job file: YAML with line numbers (:mod:`copyjob.yamlfile`), variables resolved, validated by the model.

Every problem becomes one line ``file:line: field: problem``; all of them are found in one pass and raised
together (:meth:`JobFileError.of <copyjob.core.errors.JobFileError.of>`).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel, ValidationError

from copyjob.core.collector import paused_gc
from copyjob.core.contracts import PARTITION_BY_OPTION
from copyjob.core.errors import JobFileError
from copyjob.core.paths import pattern_problem
from copyjob.core.scope import state_scope
from copyjob.core.urls import identity, scheme_of
from copyjob.filesets import endpoint_url, format_from_pattern, is_file_url, legacy_relative_problem
from copyjob.jobfile import Job, KafkaSourceOptions, ResolvedTable, resolve_tables
from copyjob.matrix import TABLE_FORMAT_KINDS
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
    matched: list[ResolvedTable] | None = None
    """A ``kafka://`` source's entries with each topic pattern replaced by the topics it matched on the broker
    (:func:`copyjob.topic_source.expand`); None: the entries as written."""

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

    def state_store(self, state: str | None = None) -> StateStore:
        """The store named by ``state`` (``--state``), else by the job file's ``state:``, else the default
        beside the job file; a relative path is relative to the job file. Rows this job wrote before states
        were scoped by destination are adopted by this scope."""
        from copyjob.offsets import default_state_url, open_state_store

        url = state or self.job.state
        if url and "://" not in url and not Path(url).is_absolute():
            url = str(self.base_dir / url)
        store = open_state_store(url or default_state_url(self.path))
        store.adopt_unscoped(self.job.job, self.scope)
        return store

    def ledger(self, store: StateStore) -> Ledger:
        """The positions of this job's tables in its destination, kept in ``store`` under the job's scope."""
        from copyjob.offsets.ledger import Ledger

        return Ledger(store, self.scope, self.job.job, targets=[t.spec.target_name for t in self.tables])

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
        return self.matched if self.matched is not None else self.entries

    @property
    def entries(self) -> list[ResolvedTable]:
        """The ``tables:`` entries as written (a topic pattern is one entry)."""
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


def _plain(node: Any, key: PathKey, library: VariableLibrary, file: str, lines: dict[PathKey, int],
           unresolved: list[JobFileError]) -> Any:
    """Plain dicts and lists, variables substituted in strings; a string with an unresolved variable is kept
    as written and its problem added to ``unresolved``."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v, (*key, str(k)), library, file, lines, unresolved) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, (*key, i), library, file, lines, unresolved) for i, v in enumerate(node)]
    if isinstance(node, str) and "$" in node:
        if len(key) == 3 and key[0] == "tables" and key[2] == "target":
            node = _TOPIC_PLACEHOLDER.sub("$${topic}", node)  # a topic pattern's placeholder (copyjob.topic_patterns)
        try:
            return library.substitute(node, file=file, line=_nearest(lines, key), field_name=format_key(key))
        except JobFileError as exc:
            unresolved.append(exc)
    return node


def _nearest(lines: dict[PathKey, int], key: PathKey) -> int | None:
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return None


_TOPIC_PLACEHOLDER = re.compile(r"(?<!\$)\$\{topic\}")
"""``${topic}`` in a table's target is no variable (``$${topic}`` stays the literal text it always was)."""
_FRIENDLY = {
    "extra_forbidden": "unknown key",
    "missing": "required but missing",
}


def load_job(path: Path, *, variables: Path | None = None, env: str | None = None) -> LoadedJob:
    """Read, resolve and validate a job file. Raises JobFileError (exit 2) naming file, line and field, for
    every problem found in one pass (a :class:`~copyjob.core.errors.JobFileProblems` when there are several):
    the unresolved variables and the problems of each field; then, when every field is valid, the checks that
    need several fields (:func:`_check_semantics`)."""
    path = path.resolve() if path.exists() else path
    with paused_gc():  # tens of thousands of tables: see copyjob.core.collector
        doc, lines = read_yaml(path)
        if not isinstance(doc, Mapping):
            raise JobFileError("expected a mapping with job:, source:, destination:, tables:", file=str(path),
                               line=1)
        return load_document(doc, lines, path=path, library=load_library(path, variables, env), env=env)


def load_document(doc: Mapping[str, Any], lines: dict[PathKey, int], *, path: Path, library: VariableLibrary,
                  env: str | None = None) -> LoadedJob:
    """Resolve and validate a job already read (:func:`load_job`; :func:`copyjob.api.load_job` from a dict,
    with no lines). ``path`` names it in errors and places its relative paths and default state."""
    with paused_gc():
        unresolved: list[JobFileError] = []
        plain = _plain(doc, (), library, str(path), lines, unresolved)
        try:
            job = Job.model_validate(plain)
        except ValidationError as exc:
            raise JobFileError.of([*unresolved, *_field_problems(exc, path, lines, plain, unresolved)]) from None
        if unresolved:
            raise JobFileError.of(unresolved)
        loaded = LoadedJob(job=job, path=path, lines=lines, env=env)
        problems = _check_semantics(loaded)
        if problems:
            raise JobFileError.of(problems)
    return _with_partitions(loaded)


def _with_partitions(loaded: LoadedJob) -> LoadedJob:
    """The tables' ``partition_by:`` handed to the lakehouse destination in its URL (every place that opens
    the destination builds the URL from ``job.destination``)."""
    wanted = {t.spec.target_name: t.spec.partition_by for t in loaded.tables if t.spec.partition_by}
    if not wanted:
        return loaded
    destination = loaded.job.destination
    options = {**destination.options, PARTITION_BY_OPTION: json.dumps(wanted)}
    job = loaded.job.model_copy(update={"destination": destination.model_copy(update={"options": options})})
    return replace(loaded, job=job)


def _field_problems(exc: ValidationError, path: Path, lines: dict[PathKey, int], doc: Any,
                    unresolved: list[JobFileError]) -> list[JobFileError]:
    """One problem per value in error, "did you mean" for an unknown key close to a known one. Fields whose
    variables are unresolved are left out (their text is not what was meant), as is a missing key that an
    unknown key's suggestion names (``destinaton:`` is one mistake, not two)."""
    skip = [p.field for p in unresolved if p.field]
    found: dict[PathKey, tuple[str, str]] = {}  # place -> (error type, message), in pydantic's order
    for err in exc.errors():
        loc: PathKey = tuple(p for p in err["loc"] if isinstance(p, str | int))
        kind = err["type"]
        msg = _FRIENDLY.get(kind, err["msg"]).removeprefix("Value error, ")
        if kind != "missing":
            loc, tags = _in_doc(doc, loc)
            if tags:  # a value that fits no member of a union (str | int | …): one problem naming them
                kind = "union"
                msg = f"{found[loc][1]} or {tags[0]}" if loc in found else f"expected {tags[0]}"
        field = format_key(loc)
        if not any(field == s or field.startswith((f"{s}.", f"{s}[")) for s in skip):
            found[loc] = (kind, msg)
    guesses = {loc: _close_key(loc) for loc, (kind, _) in found.items() if kind == "extra_forbidden"}
    suggested = {(*loc[:-1], guess) for loc, guess in guesses.items() if guess}
    problems = []
    for loc, (kind, msg) in found.items():
        if kind == "missing" and loc in suggested:
            continue
        if guesses.get(loc):
            msg += f" (did you mean {guesses[loc]}?)"
        problems.append(JobFileError(msg, file=str(path), line=_nearest(lines, loc) or 1,
                                     field=format_key(loc) or None))
    return problems


def _in_doc(doc: Any, loc: PathKey) -> tuple[PathKey, PathKey]:
    """``loc`` split into the place in the document and what pydantic added after it (the member tags of a
    union: ``("kafka", "config", "x", "str")``)."""
    node = doc
    for i, part in enumerate(loc):
        inside = part in node if isinstance(node, Mapping) else \
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not inside:
            return loc[:i], loc[i:]
        node = node[part]
    return loc, ()


def _close_key(loc: PathKey) -> str | None:
    """The known key closest to the unknown one at ``loc`` (difflib), if any is close."""
    model = _model_at(loc[:-1])
    if model is None or not isinstance(loc[-1], str):
        return None
    names = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.6)
    return close[0] if close else None


def _model_at(loc: PathKey) -> type[BaseModel] | None:
    """The job file model (section) that holds the keys at ``loc``: ``("tables", 0)`` → TableSpec."""
    model: type[BaseModel] | None = Job
    for part in loc:
        if isinstance(part, int):
            continue  # an item of the list the previous key named
        if model is None:
            return None
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        model = _model_in(field.annotation) if field is not None else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model in ``X``, ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class _Problems:
    """The problems of the checks that need several fields, collected instead of stopping at the first."""

    def __init__(self) -> None:
        self.found: list[JobFileError] = []

    def add(self, problem: JobFileError) -> None:
        self.found.extend(problem.problems)

    def check(self, check: Callable[..., None], *args: Any) -> None:
        """Run a check that raises its first problem."""
        try:
            check(*args)
        except JobFileError as exc:
            self.add(exc)


def _check_semantics(loaded: LoadedJob) -> list[JobFileError]:
    """Checks that need more than one field (mode/method combinations per table, targets, file sets, names on
    the source): every problem found."""
    found = _Problems()
    if loaded.job.transport == "kafka" and loaded.job.kafka is None:
        found.add(loaded.error("transport kafka needs a kafka: section with bootstrap_servers", ("transport",)))
    # mode × source × destination × transport × method (copyjob.matrix)
    for unsupported in check_support(loaded.job):
        found.add(loaded.error(unsupported.message, unsupported.key))
    seen: set[str] = set()
    file_source = is_file_url(loaded.job.source.url)
    found.check(_check_endpoint_formats, loaded)
    found.check(_check_file_urls, loaded)
    found.check(_check_stream_names, loaded)
    if loaded.job.transport == "kafka":
        found.check(_check_topics, loaded)
    if scheme_of(loaded.job.source.url) == "kafka":  # copyjob.topic_source
        for problem in _topic_source_problems(loaded):
            found.add(problem)
    for t in loaded.tables:
        base: PathKey = ("tables", t.index)
        found.check(_check_file_fields, loaded, t, file_source)
        found.check(_check_partition_by, loaded, t)
        if t.spec.target_name in seen:
            found.add(loaded.error(f"two tables write to the same target {t.spec.target_name!r}",
                                   (*base, "target") if t.spec.target else (*base, "name")))
        seen.add(t.spec.target_name)
        if t.mode == "incremental" and not t.spec.incremental_column and not file_source:
            found.add(loaded.error("required when mode is incremental (the column whose growth marks new rows)",
                                   (*base, "incremental_column")))
        if t.spec.columns:
            targets = list(t.spec.columns.values())
            if len(set(targets)) != len(targets):
                found.add(loaded.error("two columns renamed to the same name", (*base, "columns")))
    return found.found


def _topic_source_problems(loaded: LoadedJob) -> list[JobFileError]:
    """A ``kafka://`` source: its options (copyjob.jobfile.KafkaSourceOptions) at their lines, and a target for
    every entry (an entry names a topic, which is no table name), a topic pattern that compiles and a target
    template with known placeholders (copyjob.topic_patterns)."""
    from copyjob.topic_patterns import is_pattern, pattern_problem, template_problem

    problems = []
    try:
        KafkaSourceOptions.model_validate(loaded.job.source.options)
    except ValidationError as exc:
        for err in exc.errors():
            key: PathKey = ("source", "options", *(p for p in err["loc"] if isinstance(p, str | int)))
            message = _FRIENDLY.get(err["type"], err["msg"]).removeprefix("Value error, ")
            problems.append(loaded.error(message, key))
    for t in loaded.tables:
        pattern = is_pattern(t.spec.name)
        if pattern and (problem := pattern_problem(t.spec.name)):
            problems.append(loaded.error(problem, ("tables", t.index, "name")))
        if not t.spec.target:
            what = "the topics it matches are" if pattern else f"topic {t.spec.name!r} is"
            problems.append(loaded.error(f"required for a kafka:// source: the destination table that {what} "
                                         "applied into", ("tables", t.index, "target")))
        elif problem := template_problem(t.spec.target, pattern=pattern):
            problems.append(loaded.error(problem, ("tables", t.index, "target")))
    return problems


def _check_stream_names(loaded: LoadedJob) -> None:
    """The slot and publication a PostgreSQL cdc job names by default, ``copyjob_<job>_<env>`` made a valid slot
    name (lower case, other characters as ``_``, cut at 63 bytes: ``copyjob.ingest.postgres_cdc.default_name``),
    must keep the environment: cut short, two environments of one job could share a slot. The names given in
    ``cdc.slot`` and ``cdc.publication.name`` are checked by the model."""
    cdc = loaded.job.cdc
    if not loaded.env or not loaded.cdc_tables or scheme_of(loaded.job.source.url) != "postgresql" \
            or (cdc.slot and cdc.publication.name):
        return
    full = f"copyjob_{loaded.stream_name}"
    if len(full.encode()) <= 63:
        return
    from copyjob.ingest.postgres_cdc import default_name

    given = "cdc.publication.name" if cdc.slot else "cdc.slot"
    raise JobFileError(f"the default name {full!r} for --env {loaded.env} is longer than PostgreSQL's 63 bytes, "
                       f"and cut short ({default_name(loaded.stream_name)!r}) it may be another environment's: set "
                       "cdc.slot and cdc.publication.name", file=str(loaded.path), line=loaded.line_of(("job",)),
                       field=given)


def _check_topics(loaded: LoadedJob) -> None:
    """Two tables whose topics (or dead-letter topics) would be one: topic names are made legal by replacing
    characters (copyjob.connectors.kafka.naming), and Kafka also refuses names differing only in ``.``/``_``."""
    from copyjob.connectors.kafka import dlq_topic, source_info, topic_of
    from copyjob.connectors.kafka.naming import collision_key
    from copyjob.core.errors import ConfigurationError
    from copyjob.core.schema import TableName
    from copyjob.core.urls import parse_url

    try:
        url = parse_url(loaded.job.source.url, loaded.base_dir)
    except ConfigurationError:
        return  # the URL's own check reports it
    prefix = loaded.topic_prefix
    topics: dict[str, tuple[str, str]] = {}
    dlqs: dict[str, tuple[str, str]] = {}
    for t in loaded.tables:
        topic = topic_of(prefix, source_info(url, TableName.parse(t.spec.name)))
        other, other_topic = topics.setdefault(collision_key(topic), (t.spec.name, topic))
        if other != t.spec.name:
            raise loaded.error(
                f"tables {other!r} and {t.spec.name!r} would publish to one Kafka topic ({other_topic} and "
                f"{topic}: characters outside [a-zA-Z0-9._-] become _, and Kafka takes . and _ as the same): "
                "copy them in two jobs with different kafka.topic_prefix", ("tables", t.index, "name"))
        dlq = dlq_topic(prefix, t.spec.target_name)
        other, other_dlq = dlqs.setdefault(collision_key(dlq), (t.spec.target_name, dlq))
        if other != t.spec.target_name:
            key: PathKey = ("tables", t.index, "target" if t.spec.target else "name")
            raise loaded.error(
                f"targets {other!r} and {t.spec.target_name!r} would share one dead-letter topic ({other_dlq} and "
                f"{dlq}: characters outside [a-zA-Z0-9._-] become _, and Kafka takes . and _ as the same): "
                "give one of them another target name", key)


def _check_endpoint_formats(loaded: LoadedJob) -> None:
    if loaded.job.source.format is not None:
        raise loaded.error("a file source gives the format per table entry (tables[].format)", ("source", "format"))
    if loaded.job.destination.format is not None and not is_file_url(loaded.job.destination.url):
        raise loaded.error("only for file destinations (file://, s3://): a folder of files or of lakehouse tables",
                           ("destination", "format"))


def _check_partition_by(loaded: LoadedJob, t: ResolvedTable) -> None:
    if t.spec.partition_by and loaded.job.destination.format not in TABLE_FORMAT_KINDS:
        raise loaded.error("only for lakehouse destinations (format: delta or iceberg), whose tables have "
                           "partitions", ("tables", t.index, "partition_by"))


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
    s3 = scheme_of(loaded.job.source.url) == "s3"
    problem = pattern_problem(spec.pattern, "the source's S3 prefix" if s3 else "the source folder")
    if problem:
        raise loaded.error(problem, (*base, "pattern"))
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


def _check_file_urls(loaded: LoadedJob) -> None:
    """Local folders follow RFC 8089 (``file:///abs``; ``./rel`` or ``file:rel`` beside the job file): another
    host is refused, and a ``file:///x`` meant the old way (``x`` beside the job file, no ``/x``) is said plainly.
    ``follow_symlinks_outside`` is for a local file source only."""
    from copyjob.core.errors import ConfigurationError
    from copyjob.core.urls import parse_file_url

    problems = []
    for side in ("source", "destination"):
        endpoint = getattr(loaded.job, side)
        if scheme_of(endpoint.url) == "file":
            try:
                parse_file_url(endpoint.url, loaded.base_dir)
                problem = legacy_relative_problem(endpoint.url, loaded.base_dir)
            except ConfigurationError as exc:
                problem = str(exc)
            if problem:
                problems.append(loaded.error(problem, (side, "url")))
        if endpoint.follow_symlinks_outside and (side == "destination" or scheme_of(endpoint.url) != "file"):
            problems.append(loaded.error("only for a local file source (file:///…, ./folder)",
                                         (side, "follow_symlinks_outside")))
    if problems:
        raise JobFileError.of(problems)
