"""A folder or S3 prefix as a destination: a folder of files per table, one output file per source file.

Layout::

    <root>/<table>/_schema.json                 columns (logical types) and key: an empty table reflects
    <root>/<table>/<source path>.<format>       one file per source file (the source's suffix replaced), so a
                                                source file copied again replaces its output instead of adding
    <root>/<table>/.copyjob-<id>.<format>.tmp   outputs of a load in progress (dotted: readers skip them)
    <root>/_copyjob_state/<job>/<table>.json    the state marker of the last committed load

Format from ``destination.format``: parquet (default), csv or jsonl. Rows that do not come from a file (a
database source) land in ``<run>-<load>.<format>``.

Not transactional. A load writes temporary files; ``commit`` renames them to their final names (atomic on a
local disk; on S3 an object appears whole), then deletes what overwrite or truncate replace, then writes the
marker: a crash before the marker makes the next run write the same names again, so nothing is doubled.
Merge is not supported (the files are not a keyed table).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from copyjob.connectors.files.filesystem import (
    Root,
    delete,
    files_under,
    guarded,
    move,
    open_output,
    open_root,
    read_text,
    temp_name,
    write_text_atomically,
)
from copyjob.connectors.parquet import (
    DEFAULT_COMPRESSION,
    SCHEMA_FILE,
    STATE_DIR,
    TEMP_PREFIX,
    _conform,
    _safe_name,
    _schema_from_json,
    _schema_to_json,
    _write_atomically,
)

from copyjob.core import temporal
from copyjob.core.contracts import DestinationCapabilities, StateMarker, UpdateMethod
from copyjob.core.errors import ConfigurationError, TableNotFound
from copyjob.core.paths import COMPRESSION_SUFFIXES, FORMAT_SUFFIXES
from copyjob.core.private import make_private_folder
from copyjob.core.schema import Column, TableName, TableSchema
from copyjob.core.urls import ConnectionUrl
from copyjob.core.values import json_float

FORMATS = ("parquet", "csv", "jsonl")


class FileDestination:
    capabilities = DestinationCapabilities(transactional=False, supports_merge=False, files=True, markers_alone=True)

    def __init__(self, url: ConnectionUrl) -> None:
        self.format = url.query.get("format", "parquet")
        if self.format not in FORMATS:
            raise ConfigurationError(f"unknown file format {self.format!r} for {url} (use {', '.join(FORMATS)})")
        self.root: Root = open_root(url, create=True)

    def folder(self, table: TableName) -> str:
        """``<schema>.<table>`` or ``<table>``, relative to the root."""
        for part in (table.name, table.schema or "x"):
            if not part or "/" in part or "\\" in part or "\0" in part or part in (".", ".."):
                raise ConfigurationError(f"table name {str(table)!r} cannot be a folder name")
        return f"{table.schema}.{table.name}" if table.schema else table.name

    def reflect(self, table: TableName) -> TableSchema | None:
        text = guarded(lambda: read_text(self.root, f"{self.folder(table)}/{SCHEMA_FILE}"), self.root.display)
        return None if text is None else _schema_from_json(table, text)

    def create_table(self, schema: TableSchema, *, primary_key: bool = True, key_index: bool = False) -> None:
        self.save_schema(schema if primary_key else replace(schema, primary_key=()))

    def add_columns(self, table: TableName, columns: Sequence[Column]) -> None:
        """Record the columns; files written before simply lack them."""
        current = self.table_schema(table)
        added = tuple(replace(c, nullable=True) for c in columns if current.column(c.name) is None)
        self.save_schema(replace(current, columns=current.columns + added))

    def drop_table(self, table: TableName) -> None:
        folder = self.folder(table)
        hidden = (".", "_")
        data = [rel for rel in guarded(lambda: files_under(self.root, folder), self.root.display)
                if not any(part.startswith(hidden) for part in rel[len(folder) + 1:].split("/"))]
        for rel in (*data, f"{folder}/{SCHEMA_FILE}"):
            guarded(partial(delete, self.root, rel), self.root.display)

    def begin_load(self, schema: TableSchema, method: UpdateMethod, key: Sequence[str],
                   truncate: bool = False, deferred_key: Sequence[str] = ()) -> FileLoadSession:
        if method == "merge":
            raise ConfigurationError("a file destination does not support merge (use append or overwrite)")
        self.table_schema(schema.table)
        return FileLoadSession(self, schema, truncate or method == "overwrite", tuple(deferred_key))

    def read_marker(self, job: str, table: str) -> StateMarker | None:
        text = guarded(lambda: read_text(self.root, self.marker_path(job, table)), self.root.display)
        if text is None:
            return None
        doc = json.loads(text)
        return StateMarker(job=job, table=table, run_id=doc["run_id"], state=doc["state"])

    def close(self) -> None:
        pass

    # ------------------------------------------------------------ used by the load session

    def marker_path(self, job: str, table: str) -> str:
        return f"{STATE_DIR}/{_safe_name(job)}/{_safe_name(table)}.json"

    def write_marker(self, marker: StateMarker) -> None:
        doc = {"job": marker.job, "table": marker.table, "run_id": marker.run_id, "state": marker.state,
               "committed_at": dt.datetime.now(dt.UTC).isoformat()}
        self.write_text(self.marker_path(marker.job, marker.table), json.dumps(doc, indent=2))

    def table_schema(self, table: TableName) -> TableSchema:
        schema = self.reflect(table)
        if schema is None:
            raise TableNotFound(f"table {table} does not exist under {self.root.display}")
        return schema

    def save_schema(self, schema: TableSchema) -> None:
        self.write_text(f"{self.folder(schema.table)}/{SCHEMA_FILE}", _schema_to_json(schema))

    def write_text(self, rel: str, text: str) -> None:
        if self.root.local:  # fsync'd, as the Parquet destination does
            path = Path(self.root.full(rel))
            make_private_folder(path.parent)
            _write_atomically(path, text)
        else:
            guarded(lambda: write_text_atomically(self.root, rel, text), self.root.display)


class FileLoadSession:
    """Writes each output into a temporary file; ``commit`` publishes them (see the module docstring)."""

    def __init__(self, dest: FileDestination, schema: TableSchema, replace_all: bool,
                 deferred_key: tuple[str, ...]) -> None:
        self._dest, self._root, self._schema = dest, dest.root, schema
        self._replace_all, self._deferred_key = replace_all, deferred_key
        self._folder = dest.folder(schema.table)
        self._arrow_schema = schema.arrow_schema()
        self._load_id = uuid.uuid4().hex[:12]
        self._outputs: list[tuple[str, str]] = []  # (temporary, final), relative to the root
        self._writer: _Writer | None = None
        self._done = False

    def begin_file(self, name: str) -> None:
        """Start the output for source file ``name``: ``2026/01/sales.csv.gz`` → ``2026/01/sales.parquet``."""
        self._close_writer()
        self._open_writer(f"{self._folder}/{output_name(name, self._dest.format)}")

    def write(self, batch: pa.RecordBatch) -> int:
        if self._writer is None:  # rows that do not come from a file: a new name, sortable by time
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            self._open_writer(f"{self._folder}/{stamp}-{self._load_id}.{self._dest.format}")
        writer = self._writer
        assert writer is not None
        batch = _conform(batch, self._arrow_schema, table=self._schema.table)
        guarded(partial(writer.write, batch), self._root.display)
        return int(batch.num_rows)

    def write_binary(self, chunks: Iterator[bytes]) -> int:
        raise ConfigurationError("a file destination does not accept a PostgreSQL binary COPY stream")

    def commit(self, marker: StateMarker | None) -> None:
        """Publish the load:

        1. close the current output;
        2. rename every temporary output to its final name, replacing a file of that name;
        3. overwrite and truncate: delete the table's other data files;
        4. record a deferred key in ``_schema.json``;
        5. write the marker, last, so that it never describes files that are not in place.
        """
        if self._done:
            raise ConfigurationError("this load was already committed or aborted")
        try:
            self._close_writer()
            published = set()
            while self._outputs:
                tmp, final = self._outputs[0]
                guarded(partial(move, self._root, tmp, final), self._root.display)
                self._outputs.pop(0)
                published.add(final)
        except BaseException:
            self.abort()
            raise
        self._done = True
        if self._replace_all:
            for rel in self._data_files():
                if rel not in published:
                    guarded(partial(delete, self._root, rel), self._root.display)
        if self._deferred_key:
            current = self._dest.table_schema(self._schema.table)
            self._dest.save_schema(replace(current, primary_key=self._deferred_key))
        if marker is not None:
            self._dest.write_marker(marker)

    def abort(self) -> None:
        """Delete the temporary outputs; published files and the marker stay as they were."""
        try:
            self._close_writer()
        except Exception:
            pass  # the temporary file is deleted below either way
        for tmp, _ in self._outputs:
            try:
                delete(self._root, tmp)
            except OSError:
                pass
        self._outputs = []
        self._done = True

    def _open_writer(self, final: str) -> None:
        tmp = temp_name(self._folder, TEMP_PREFIX, f".{self._dest.format}")
        self._outputs.append((tmp, final))
        sink = guarded(lambda: open_output(self._root, tmp), self._root.display)
        self._writer = _Writer(sink, self._arrow_schema, self._dest.format)

    def _close_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            guarded(writer.close, self._root.display)

    def _data_files(self) -> list[str]:
        hidden = (".", "_")
        return [rel for rel in files_under(self._root, self._folder)
                if not any(part.startswith(hidden) for part in rel[len(self._folder) + 1:].split("/"))]


def output_name(source: str, fmt: str) -> str:
    """The source path with its format (and compression) suffix replaced by ``fmt``'s."""
    stem = source
    lower = stem.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            stem, lower = stem[: -len(suffix)], lower[: -len(suffix)]
            break
    for suffix in FORMAT_SUFFIXES:
        if lower.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{stem}.{fmt}"


class _Writer:
    """One output file in one of the formats."""

    def __init__(self, sink: pa.NativeFile, schema: pa.Schema, fmt: str) -> None:
        self._sink = sink
        self._write: Callable[[pa.RecordBatch], None]
        self._finish: Callable[[], None]
        if fmt == "parquet":
            parquet = pq.ParquetWriter(sink, schema, compression=DEFAULT_COMPRESSION)
            self._write, self._finish = parquet.write_batch, parquet.close
        elif fmt == "csv":
            writer = pcsv.CSVWriter(sink, pa.schema([_csv_field(f) for f in schema]))
            self._write, self._finish = lambda batch: writer.write_batch(_csv_batch(batch)), writer.close
        else:
            self._write, self._finish = self._write_json_lines, lambda: None

    def write(self, batch: pa.RecordBatch) -> None:
        self._write(batch)

    def close(self) -> None:
        try:
            self._finish()
        finally:
            self._sink.close()

    def _write_json_lines(self, batch: pa.RecordBatch) -> None:
        rows = _beyond_python_as_text(batch).to_pylist()
        for name in _non_finite_columns(batch):  # JSON has no NaN or infinity: write the strings
            for row in rows:
                value = row[name]
                if value is not None:
                    row[name] = json_float(value)
        lines = (json.dumps(row, default=_json_value, ensure_ascii=False, allow_nan=False) for row in rows)
        self._sink.write("".join(line + "\n" for line in lines).encode("utf-8"))


def _text_in_csv(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_date(t) or \
        pa.types.is_time(t) or pa.types.is_timestamp(t)


def _csv_field(f: pa.Field) -> pa.Field:
    return f.with_type(pa.string()) if _text_in_csv(f.type) else f


def _csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Binary as PostgreSQL's hex (``\\x00ff``: CSV holds text, and PostgreSQL's COPY reads it back); dates,
    times and timestamps as Arrow writes them, except the values Python cannot hold (infinity, BC, 24:00),
    which are written as PostgreSQL spells them (see ``core.temporal``)."""
    columns = []
    for f, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            hexed = pa.array([None if v is None else "\\x" + v.hex() for v in column.to_pylist()], pa.string())
            columns.append(hexed)
        elif _text_in_csv(f.type):
            columns.append(temporal.as_pg_text(column))
        else:
            columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema([_csv_field(f) for f in batch.schema]))


def _beyond_python_as_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with the date, time and timestamp columns holding values Python cannot (infinity, BC, 24:00)
    as text in PostgreSQL's spelling; the other values of such a column as Python's isoformat would write them."""
    columns = list(batch.columns)
    fields = list(batch.schema)
    for i, column in enumerate(columns):
        mask = temporal.beyond_python(column)
        if mask is None:
            continue
        kind = temporal.kind_of(column)
        ordinary = pc.if_else(mask, pa.scalar(None, column.type), column).to_pylist()
        columns[i] = pa.array([temporal.pg_text(kind, v) if m and v is not None else
                               (None if o is None else o.isoformat())
                               for v, m, o in zip(temporal.integers(column), mask.to_pylist(), ordinary,
                                                  strict=True)], pa.string())
        fields[i] = fields[i].with_type(pa.string())
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def _non_finite_columns(batch: pa.RecordBatch) -> list[str]:
    """The float columns of ``batch`` that hold a NaN or an infinity."""
    return [f.name for f, column in zip(batch.schema, batch.columns, strict=True)
            if pa.types.is_floating(f.type) and pc.all(pc.is_finite(column)).as_py() is False]


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)
