"""Checks that need the systems: every table exists, every column the job names is in it, and change capture
finds what it needs at the source.

They run for all selected tables before anything is written, so a bad job writes nothing anywhere, and they
report every problem in one pass: a table or column problem is a JobFileError naming the job file's line and
field, with "did you mean" when the catalog holds a close name; a change capture problem is a line saying what
to change at the source (the log source's own ``check``, which ``run`` calls before it creates anything).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from copyjob.core.contracts import DestinationCapabilities, FileSetSource, Source
from copyjob.core.errors import CopyjobError, JobFileError, TableNotFound
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableName, TableSchema
from copyjob.filesets import file_set
from copyjob.jobfile import ResolvedTable
from copyjob.loader import LoadedJob


def check_tables(loaded: LoadedJob, tables: list[ResolvedTable], source: Source,
                 destination: DestinationCapabilities) -> list[TablePlan]:
    """Reflect every table at the source and check the job's names against it (the destination is not
    touched, so a bad job writes nothing there). Raises every problem at once."""
    plans, problems = table_problems(loaded, tables, source, destination)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise JobFileError(f"{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))
    return plans


def table_problems(loaded: LoadedJob, tables: list[ResolvedTable], source: Source,
                   destination: DestinationCapabilities) -> tuple[list[TablePlan], list[JobFileError]]:
    """The plans of the tables that passed, and every problem of the others."""
    problems: list[JobFileError] = []
    plans: list[TablePlan] = []
    catalog = _Catalog(source)
    for t in tables:
        plan: TablePlan | None
        try:
            if source.capabilities.files:
                plan = _check_file_table(loaded, t, cast(FileSetSource, source), destination)
            else:
                plan = _check_table(loaded, t, source, destination, catalog, problems.append)
        except JobFileError as exc:
            problems.append(exc)
            continue
        if plan is not None:
            plans.append(plan)
    return plans, problems


def capture_problems(loaded: LoadedJob, plans: Sequence[TablePlan], source: Source) -> list[str]:
    """What change capture of the cdc ``plans`` lacks at the source (settings, privileges, replica identity,
    slot, publication; MySQL/MariaDB: binlog settings and grants), each with what to do. Creates nothing."""
    from copyjob.filesets import endpoint_url
    from copyjob.ingest import open_log_source

    cdc = [p for p in plans if p.table.mode == "cdc"]
    if not cdc:
        return []
    log_source = open_log_source(endpoint_url(loaded.job.source, loaded.base_dir), loaded.stream_name,
                                 loaded.job.cdc.as_capture_options(), source)
    try:
        return log_source.check(cdc)
    finally:
        log_source.close()


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'orders'?)`` for the closest candidates, or an empty string."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)"


class _Catalog:
    """The source's table names, read once and only when a table is not found."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._names: list[str] | None = None

    def suggest(self, name: str) -> str:
        if self._names is None:
            try:
                tables = self._source.table_names()
            except CopyjobError:
                tables = []
            self._names = [n for t in tables for n in {str(t), t.name}]
        return did_you_mean(name, self._names)


def _check_table(loaded: LoadedJob, t: ResolvedTable, source: Source, destination: DestinationCapabilities,
                 catalog: _Catalog, report: Callable[[JobFileError], None]) -> TablePlan | None:
    """The table's plan, or None when it has problems (each passed to ``report``)."""
    base = ("tables", t.index)
    spec = t.spec
    found: list[JobFileError] = []

    def problem(error: JobFileError) -> None:
        found.append(error)
        report(error)

    for name in ("pattern", "format", "csv"):
        if getattr(spec, name) is not None:
            problem(loaded.error("only for file sources (file://, s3://); this source has tables", (*base, name)))
    try:
        schema = source.reflect(TableName.parse(spec.name))
    except TableNotFound as exc:
        raise loaded.error(f"source table {spec.name!r} does not exist{catalog.suggest(spec.name)} ({exc})",
                           (*base, "name")) from None
    columns = {c.name for c in schema.columns}

    def need(column: str, field: str, what: str) -> None:
        if column not in columns:
            hint = did_you_mean(column, columns) or f" (columns: {', '.join(sorted(columns))})"
            problem(loaded.error(f"{what} {column!r} is not a column of {spec.name}{hint}", (*base, field)))

    if spec.incremental_column:
        need(spec.incremental_column, "incremental_column", "incremental column")
    for source_name in spec.columns:
        need(source_name, "columns", "renamed column")
    for k in spec.key or ():
        need(k, "key", "key column")
    if t.update_method == "merge":
        if not (spec.key or schema.primary_key):
            problem(loaded.error(f"merge needs a key: {spec.name} has no primary key, so name the key columns",
                                 (*base, "key")))
        if not destination.supports_merge:
            field = (*base, "update_method") if spec.update_method else ("copy", "update_method")
            problem(loaded.error("this destination does not support merge", field))
    generated = [c.name for c in schema.columns if c.generated]
    if t.mode == "cdc" and generated and not destination.generated_columns:
        field = (*base, "mode") if spec.mode else ("copy", "mode")
        problem(loaded.error(
            f"{spec.name}: column(s) {', '.join(generated)} are generated at the source (GENERATED ALWAYS AS … "
            "STORED) and PostgreSQL's change stream leaves them out, so changed rows would get NULL there; this "
            "destination cannot compute them: copy this table with mode full or incremental (which read the "
            "stored values), or into PostgreSQL (which creates them generated)", field))
    if found:
        return None
    source_key = tuple(spec.key or schema.primary_key)
    rename = spec.columns
    target = schema.renamed(TableName.parse(spec.target_name), rename)
    if not schema.primary_key and spec.key and t.update_method == "merge":
        target = TableSchema(target.table, target.columns, tuple(rename.get(k, k) for k in spec.key))
    return TablePlan(table=t.as_table_job(), source_schema=schema, target_schema=target,
                     key=tuple(rename.get(k, k) for k in source_key))


def _check_file_table(loaded: LoadedJob, t: ResolvedTable, source: FileSetSource,
                      destination: DestinationCapabilities) -> TablePlan:
    """A set of files: the loader checked pattern and format; here the files are listed (once per run: the
    copy plans from this listing) and the key columns checked against a first look at the newest file (when
    there are files: an empty set is fine, it fills later)."""
    base = ("tables", t.index)
    spec = t.spec
    if spec.pattern is None:
        raise loaded.error("required for a file source", (*base, "pattern"))
    files = file_set(spec)
    listed = tuple(source.list_files(files.pattern))
    # only keys need a look inside (one file): an incremental run opens no file it does not copy
    schema = source.infer_schema(files, listed) if listed and spec.key else None
    if schema is not None:
        columns = set(schema.column_names)
        for k in spec.key or ():
            if k not in columns:
                raise loaded.error(f"key column {k!r} is not a column of the files {files.pattern!r} "
                                   f"(columns: {', '.join(sorted(columns))})", (*base, "key"))
    if t.update_method == "merge":
        if not spec.key:
            raise loaded.error("merge needs a key: files have no primary key, so name the key columns",
                               (*base, "key"))
        if not destination.supports_merge:
            field = (*base, "update_method") if spec.update_method else ("copy", "update_method")
            raise loaded.error("this destination does not support merge", field)
    source_schema = schema or TableSchema(TableName.parse(spec.name), ())
    rename = spec.columns
    key = tuple(rename.get(k, k) for k in spec.key or ())
    target = source_schema.renamed(TableName.parse(spec.target_name), rename)
    target = TableSchema(target.table, target.columns, key if t.update_method == "merge" else ())
    return TablePlan(table=t.as_table_job(), source_schema=source_schema, target_schema=target, key=key, files=files,
                     listed=listed)
