"""The sides of ``copyjob verify`` that are files, read with the copy's own readers into DuckDB
(``connectors/_digest_arrow.py``) and then compared like any table:

- a file-set source (CSV, JSON lines, Parquet under ``file://`` or ``s3://``): the files the destination's
  committed state says were copied (at or before its file mark, quarantined files left out), in copy order,
  read with the destination table's column types (as the copy reads them once the table exists), the job's
  renames and ``_source_file`` applied; under merge only the last row of each key is kept, as the merge did;
- a file destination (a folder of CSV, JSON lines or Parquet outputs): every published output of the table,
  read with the types of its ``_schema.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from copyjob.core.contracts import (
    Destination,
    FileColumnsGrew,
    FileInfo,
    FileSet,
    FileSetSource,
    RowFilter,
)
from copyjob.core.errors import DataError
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableName, TableSchema

if TYPE_CHECKING:
    import pyarrow as pa

    from copyjob.connectors._digest_arrow import ArrowDigests

BATCH_ROWS = 50_000
MAX_REREADS = 20
"""A JSON-lines file whose later lines add keys is read again with them (as the copy does); this often at most."""


@dataclass
class FileRows:
    """Rows read from files and loaded for hashing: the digests, and the rows again for a repair."""

    digests: ArrowDigests
    table: TableName
    notes: list[str] = field(default_factory=list)
    files: list[FileInfo] = field(default_factory=list)
    """The files read, in the order read."""
    reload: Callable[[], None] | None = None
    """Read the files again (after a repair rewrote some)."""

    def read(self, schema: TableSchema, filters: Sequence[RowFilter]) -> Iterator[pa.RecordBatch]:
        return self.digests.read(self.table, schema, filters)

    def files_of(self, key: Sequence[str], keys: Iterable[Sequence[Any]]) -> set[str]:
        return self.digests.files_of(self.table, key, keys)

    def close(self) -> None:
        self.digests.close()


@dataclass
class _CsvDefaults:
    """How a file destination writes CSV (Arrow's writer), to read it back."""

    delimiter: str = ","
    header: bool = True
    encoding: str = "utf-8"
    quote_char: str = '"'
    null_values: list[str] = field(default_factory=lambda: [""])


def file_set_plan(plan: TablePlan, found: TableSchema) -> TablePlan:
    """The plan with the file set's columns as the destination table holds them (named as in the files): the
    copy reads every file with these types once the table exists."""
    rename = dict(plan.table.columns)
    back = {v: k for k, v in rename.items()}
    columns = tuple(replace(c, name=back.get(c.name, c.name)) for c in found.columns)
    source = TableSchema(plan.source_schema.table, columns, tuple(plan.source_key))
    target = source.renamed(plan.target_schema.table, rename)
    return replace(plan, source_schema=source, target_schema=replace(target, primary_key=plan.key))


def copied_files(plan: TablePlan, state: dict[str, Any] | None, notes: list[str]) -> list[FileInfo]:
    """The listed files that the committed state says were copied, in copy order."""
    from copyjob.ingest.files import FileMark

    listed = sorted(plan.listed, key=lambda f: (f.mtime_ns, f.path))
    if state is None:
        notes.append("no committed state in the destination: every listed file compared")
        return listed
    mark = FileMark.from_json((state.get("extra") or {}).get("files"))
    copied = [f for f in listed if f.path not in mark.quarantined and mark.mtime_ns is not None and (
        f.mtime_ns < mark.mtime_ns or (f.mtime_ns == mark.mtime_ns and f.path in mark.names))]
    later = len(listed) - len(copied) - sum(1 for f in listed if f.path in mark.quarantined)
    if later:
        notes.append(f"{later} file(s) newer than the last committed copy (new or rewritten) left out")
    if mark.quarantined:
        notes.append(f"{len(mark.quarantined)} quarantined file(s) left out")
    return copied


def load_file_set(plan: TablePlan, source: FileSetSource, destination: Destination, job: str) -> FileRows:
    """The file set's copied rows (see the module docstring), loaded for hashing."""
    from copyjob.connectors._digest_arrow import ArrowDigests

    assert plan.files is not None
    marker = destination.read_marker(job, plan.state_key)
    notes: list[str] = []
    files = copied_files(plan, None if marker is None else dict(marker.state), notes)
    schema = plan.source_schema
    digests = ArrowDigests()
    try:
        last = plan.source_key if plan.table.update_method == "merge" else ()
        rows = digests.load(schema.table, schema, _read_all(source, plan.files, files, schema), last)
    except BaseException:
        digests.close()
        raise
    notes.insert(0, f"{len(files)} source file(s) read ({rows} rows"
                    f"{', the last of each key' if last else ''})")
    return FileRows(digests, schema.table, notes, files)


def load_folder(destination: Any, found: TableSchema) -> FileRows:
    """A file destination's published outputs of table ``found`` (connectors.files.FileDestination), loaded
    for hashing."""
    from copyjob.connectors._digest_arrow import ArrowDigests
    from copyjob.connectors.files.filesystem import list_files

    folder = destination.folder(found.table)
    fmt = destination.format
    files = FileSet(name=folder, pattern=f"{folder}/**", format=fmt, csv=_CsvDefaults())
    digests = ArrowDigests()
    rows = FileRows(digests, found.table)

    def load() -> None:
        outputs = [f for f in list_files(destination.root, f"{folder}/**") if f.path.endswith("." + fmt)]
        outputs.sort(key=lambda f: f.path)
        count = digests.load(found.table, found, _read_all(_RootFiles(destination.root), files, outputs, found))
        rows.files, rows.notes = outputs, [f"{len(outputs)} output file(s) read ({count} rows)"]

    try:
        load()
    except BaseException:
        digests.close()
        raise
    rows.reload = load
    return rows


def rewrite_outputs(plan: TablePlan, source: FileSetSource, destination: Any, read: FileRows, outputs: FileRows,
                    source_keys: Sequence[Sequence[Any]], destination_keys: Sequence[Sequence[Any]]) -> list[str]:
    """Repair a file destination fed by a file set: each output is named after its source file, so the source
    files whose rows differ (``source_keys``) or whose outputs hold differing rows (``destination_keys``) are
    copied again, each replacing its output, in one load; returns notes on what was done."""
    from copyjob.apply.writer import renamed
    from copyjob.connectors.files.destination import output_name

    assert plan.files is not None
    folder = destination.folder(plan.target_schema.table)
    copied = {f.path: f for f in read.files}
    by_output = {f"{folder}/{output_name(path, destination.format)}": f for path, f in copied.items()}
    todo = {path: copied[path] for path in read.files_of(plan.source_key, source_keys) if path in copied}
    notes: list[str] = []
    key = [plan.target_schema.column_names[plan.source_schema.column_names.index(k)] for k in plan.source_key]
    for out in sorted(outputs.files_of(key, destination_keys)):
        f = by_output.get(out)
        if f is None:
            notes.append(f"{out}: no copied source file writes this output: left as it is")
        else:
            todo[f.path] = f
    session = destination.begin_load(plan.target_schema, "append", plan.key)
    try:
        for f in sorted(todo.values(), key=lambda f: (f.mtime_ns, f.path)):
            session.begin_file(f.path)
            for batch in renamed(_read_one(source, plan.files, f, plan.source_schema), plan.target_schema):
                session.write(batch)
        session.commit(None)
    except BaseException:
        session.abort()
        raise
    notes.insert(0, f"re-copied {len(todo)} source file(s) over their outputs: "
                    + ", ".join(sorted(todo)[:5]) + (" …" if len(todo) > 5 else ""))
    return notes


class _RootFiles:
    """The one method of a file-set source that reading needs, over a file destination's root."""

    def __init__(self, root: Any) -> None:
        self.root = root

    def read_file(self, files: FileSet, file: FileInfo, known: TableSchema | None = None, *,
                  batch_rows: int = BATCH_ROWS) -> Any:
        from copyjob.connectors.files.readers import open_reader

        return open_reader(self.root, files, file, known, batch_rows=batch_rows)


def _read_all(source: Any, files: FileSet, listed: Sequence[FileInfo],
              schema: TableSchema) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Every file's rows as batches of ``schema`` (columns a file lacks are NULL), in the order given, each
    with the file's path."""
    for f in listed:
        for batch in _read_one(source, files, f, schema):
            yield f.path, batch


def _read_one(source: Any, files: FileSet, f: FileInfo, schema: TableSchema) -> Iterator[pa.RecordBatch]:
    known = schema
    for _ in range(MAX_REREADS):
        reader = source.read_file(files, f, known, batch_rows=BATCH_ROWS)
        try:
            if files.format != "jsonl":  # only JSON lines grow columns mid-file: the others stream
                yield from reader.batches(schema)
                return
            batches = list(reader.batches(schema))  # whole, so a re-read never repeats rows
        except FileColumnsGrew as grew:
            known = replace(known, columns=known.columns + tuple(
                c for c in grew.columns if known.column(c.name) is None))
            continue
        finally:
            reader.close()
        yield from batches
        return
    raise DataError(f"{files.name}: {f.path}: new keys kept appearing after {MAX_REREADS} reads")
