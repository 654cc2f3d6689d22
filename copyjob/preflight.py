"""Checks that need the systems: every table exists, and every column the job names is in it.

They run for all selected tables before anything is written, so a bad job writes nothing anywhere.
Each failure is a JobFileError naming the job file's line and field.
"""

from __future__ import annotations

from typing import cast

from copyjob.core.contracts import DestinationCapabilities, FileSetSource, Source
from copyjob.core.errors import TableNotFound
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableName, TableSchema
from copyjob.filesets import file_set
from copyjob.jobfile import ResolvedTable
from copyjob.loader import LoadedJob


def check_tables(loaded: LoadedJob, tables: list[ResolvedTable], source: Source,
                 destination: DestinationCapabilities) -> list[TablePlan]:
    """Reflect every table at the source and check the job's names against it (the destination is not
    touched, so a bad job writes nothing there)."""
    if source.capabilities.files:
        return [_check_file_table(loaded, t, cast(FileSetSource, source), destination) for t in tables]
    return [_check_table(loaded, t, source, destination) for t in tables]


def _check_table(loaded: LoadedJob, t: ResolvedTable, source: Source,
                 destination: DestinationCapabilities) -> TablePlan:
    base = ("tables", t.index)
    spec = t.spec
    for name in ("pattern", "format", "csv"):
        if getattr(spec, name) is not None:
            raise loaded.error("only for file sources (file://, s3://); this source has tables", (*base, name))
    try:
        schema = source.reflect(TableName.parse(spec.name))
    except TableNotFound as exc:
        raise loaded.error(f"source table {spec.name!r} does not exist ({exc})", (*base, "name")) from None
    columns = {c.name for c in schema.columns}

    def need(column: str, field: str, what: str) -> None:
        if column not in columns:
            raise loaded.error(f"{what} {column!r} is not a column of {spec.name} "
                               f"(columns: {', '.join(sorted(columns))})", (*base, field))

    if spec.incremental_column:
        need(spec.incremental_column, "incremental_column", "incremental column")
    for source_name in spec.columns:
        need(source_name, "columns", "renamed column")
    for k in spec.key or ():
        need(k, "key", "key column")
    if t.update_method == "merge":
        if not (spec.key or schema.primary_key):
            raise loaded.error(f"merge needs a key: {spec.name} has no primary key, so name the key columns",
                               (*base, "key"))
        if not destination.supports_merge:
            field = (*base, "update_method") if spec.update_method else ("copy", "update_method")
            raise loaded.error("this destination does not support merge", field)
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
