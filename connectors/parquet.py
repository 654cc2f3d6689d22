"""Parquet files as a destination: one folder of files per table under the root folder (``parquet:///dir``).

Layout::

    <root>/<table>/ or <root>/<schema>.<table>/
        _schema.json                 columns (logical types), nullability, primary key: an empty table reflects
        <run>-<load>-00000.parquet   data files, at most ``rows_per_file`` rows each
        .copyjob-<load>-00000.parquet.tmp   files of a load in progress (pyarrow.dataset skips dotted names)
    <root>/_copyjob_state/<job>/<table>.json   the state marker of the last committed load

Not transactional (``capabilities.transactional`` is False). A load writes temporary files and publishes them
at commit by renaming, so a reader never sees half a file. Replacing loads (overwrite, truncate, merge) delete
the files that were there before only after the new files are in place: a reader may briefly see old and new
files together, and a crash in that window leaves both (the marker is written last, so the next run redoes
the load). Merge rewrites the whole table: old rows whose key was loaded are dropped, the new rows (the last
one of each key) are added, and the result replaces every old file. The new rows of a merge are held in
memory; old rows are streamed batch by batch. ``delete_keys``/``update_columns`` are remembered and applied in
that rewrite, in call order, to the old rows and to the rows loaded before each call (an append or overwrite
load that uses them rewrites the table the same way).

URL options: ``?rows_per_file=1000000&compression=zstd``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from copyjob.connectors._key_ops import KeyOp, apply_ops, hits
from copyjob.connectors._keys import (
    check_delete_batch,
    last_per_key,
    match_key,
    update_targets,
    without_null_keys,
)
from copyjob.connectors._load_checks import check_load_key

from copyjob.core.contracts import DestinationCapabilities, RowDigests, StateMarker, UpdateMethod
from copyjob.core.errors import ConfigurationError, ConnectionFailed, DataError, TableNotFound
from copyjob.core.private import create_private_file, make_private_folder
from copyjob.core.schema import Column, TableName, TableSchema, logical_from_arrow, parse_logical
from copyjob.core.urls import ConnectionUrl

SCHEMA_FILE = "_schema.json"
STATE_DIR = "_copyjob_state"
TEMP_PREFIX = ".copyjob-"
DEFAULT_ROWS_PER_FILE = 1_000_000
DEFAULT_COMPRESSION = "zstd"


# ---------------------------------------------------------------- small file helpers


def _write_atomically(path: Path, text: str) -> None:
    """Write to a dotted temporary file beside ``path`` and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    create_private_file(tmp)  # 0600 from the start: it may name values (keys, markers)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _safe_name(name: str) -> str:
    """A job or table name as one file name (percent-encoded where the file system would object)."""
    encoded = quote(name, safe=" ,;=+@()[]{}'\"$!&#")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def data_files(folder: Path) -> list[Path]:
    """The published data files of a table folder (hidden and underscored names are not data)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.suffix == ".parquet" and not p.name.startswith((".", "_")) and p.is_file())


# ---------------------------------------------------------------- table schema file


def _schema_to_json(schema: TableSchema) -> str:
    columns = [{"name": c.name, "type": str(c.type), "nullable": c.nullable} for c in schema.columns]
    return json.dumps({"columns": columns, "primary_key": list(schema.primary_key)}, indent=2)


def _schema_from_json(table: TableName, text: str) -> TableSchema:
    doc = json.loads(text)
    columns = tuple(Column(name=c["name"], type=parse_logical(c["type"]), nullable=bool(c["nullable"]),
                           native_type=c["type"]) for c in doc["columns"])
    return TableSchema(table=table, columns=columns, primary_key=tuple(doc.get("primary_key", ())))


def _schema_from_files(table: TableName, files: Sequence[Path]) -> TableSchema:
    """Without ``_schema.json`` (files written by another tool): the unified schema of the files."""
    unified = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    columns = tuple(Column(name=f.name, type=logical_from_arrow(f.type, f.metadata), nullable=f.nullable,
                           native_type=str(f.type)) for f in unified)
    return TableSchema(table=table, columns=columns)


# ---------------------------------------------------------------- writing files


class _RollingWriter:
    """Writes batches into temporary files of at most ``rows_per_file`` rows; ``close`` lists them."""

    def __init__(self, folder: Path, schema: pa.Schema, load_id: str, rows_per_file: int,
                 compression: str) -> None:
        self._folder, self._schema, self._load_id = folder, schema, load_id
        self._rows_per_file, self._compression = rows_per_file, compression
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0
        self.files: list[Path] = []

    def write(self, batch: pa.RecordBatch) -> None:
        offset = 0
        while offset < batch.num_rows:
            if self._writer is None or self._rows_in_file >= self._rows_per_file:
                self._next_file()
            take = min(batch.num_rows - offset, self._rows_per_file - self._rows_in_file)
            assert self._writer is not None
            self._writer.write_batch(batch.slice(offset, take))
            self._rows_in_file += take
            offset += take

    def close(self) -> list[Path]:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.files

    def _next_file(self) -> None:
        self.close()
        path = self._folder / f"{TEMP_PREFIX}{self._load_id}-{len(self.files):05d}.parquet.tmp"
        self.files.append(path)
        create_private_file(path)
        self._writer = pq.ParquetWriter(path, self._schema, compression=self._compression)
        self._rows_in_file = 0


# ---------------------------------------------------------------- destination


class ParquetDestination:
    capabilities = DestinationCapabilities(transactional=False, supports_merge=True, markers_alone=True)

    def __init__(self, url: ConnectionUrl) -> None:
        if url.path is None or str(url.path) == ":memory:":
            raise ConfigurationError(f"parquet:// needs a folder: {url}")
        self.root = url.path
        try:
            self.rows_per_file = int(url.query.get("rows_per_file", DEFAULT_ROWS_PER_FILE))
        except ValueError as exc:
            raise ConfigurationError(f"rows_per_file must be a number in {url}") from exc
        if self.rows_per_file < 1:
            raise ConfigurationError(f"rows_per_file must be positive in {url}")
        self.compression = url.query.get("compression", DEFAULT_COMPRESSION)
        try:
            make_private_folder(self.root)
        except OSError as exc:
            raise ConnectionFailed(f"cannot create the Parquet folder {self.root}: {exc}") from exc

    def folder(self, table: TableName) -> Path:
        """``<root>/<schema>.<table>`` or ``<root>/<table>``."""
        for part in (table.name, table.schema or "x"):
            if not part or "/" in part or "\0" in part or os.sep in part or part in (".", ".."):
                raise ConfigurationError(f"table name {str(table)!r} cannot be a folder name")
        return self.root / (f"{table.schema}.{table.name}" if table.schema else table.name)

    def reflect(self, table: TableName) -> TableSchema | None:
        folder = self.folder(table)
        if (folder / SCHEMA_FILE).is_file():
            return _schema_from_json(table, (folder / SCHEMA_FILE).read_text(encoding="utf-8"))
        files = data_files(folder)
        return _schema_from_files(table, files) if files else None

    def create_table(self, schema: TableSchema, *, primary_key: bool = True, key_index: bool = False) -> None:
        folder = self.folder(schema.table)
        make_private_folder(folder)
        self.save_schema(schema if primary_key else replace(schema, primary_key=()))

    def add_columns(self, table: TableName, columns: Sequence[Column]) -> None:
        """Record the columns; files written before simply lack them (read back as NULL)."""
        current = self._require(table)
        added = tuple(replace(c, nullable=True) for c in columns if current.column(c.name) is None)
        self.save_schema(replace(current, columns=current.columns + added))

    def drop_table(self, table: TableName) -> None:
        folder = self.folder(table)
        for path in (*data_files(folder), folder / SCHEMA_FILE):
            path.unlink(missing_ok=True)

    def begin_load(self, schema: TableSchema, method: UpdateMethod, key: Sequence[str],
                   truncate: bool = False, deferred_key: Sequence[str] = ()) -> ParquetLoadSession:
        check_load_key(schema, method, key)
        return ParquetLoadSession(self, schema, method, tuple(key), truncate or method == "overwrite",
                                  tuple(deferred_key))

    def read_marker(self, job: str, table: str) -> StateMarker | None:
        path = self.marker_path(job, table)
        if not path.is_file():
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
        return StateMarker(job=job, table=table, run_id=doc["run_id"], state=doc["state"])

    def digests(self) -> RowDigests:
        """Row counts and hashes of the table folders, computed by DuckDB over their files (``copyjob verify``)."""
        from copyjob.connectors._digest_parquet import ParquetDigests

        return ParquetDigests(lambda table: data_files(self.folder(table)), self.reflect)

    def close(self) -> None:
        pass

    # ------------------------------------------------------------ used by the load session

    def marker_path(self, job: str, table: str) -> Path:
        return self.root / STATE_DIR / _safe_name(job) / f"{_safe_name(table)}.json"

    def write_marker(self, marker: StateMarker) -> None:
        path = self.marker_path(marker.job, marker.table)
        make_private_folder(path.parent)
        doc = {"job": marker.job, "table": marker.table, "run_id": marker.run_id, "state": marker.state,
               "committed_at": dt.datetime.now(dt.UTC).isoformat()}
        _write_atomically(path, json.dumps(doc, indent=2))

    def table_schema(self, table: TableName) -> TableSchema:
        return self._require(table)

    def _require(self, table: TableName) -> TableSchema:
        schema = self.reflect(table)
        if schema is None:
            raise TableNotFound(f"Parquet table {table} does not exist under {self.root}")
        return schema

    def save_schema(self, schema: TableSchema) -> None:
        _write_atomically(self.folder(schema.table) / SCHEMA_FILE, _schema_to_json(schema))


class ParquetLoadSession:
    """Writes the load into temporary files; ``commit`` publishes them (see the module docstring)."""

    def __init__(self, dest: ParquetDestination, schema: TableSchema, method: UpdateMethod,
                 key: tuple[str, ...], replace_all: bool, deferred_key: tuple[str, ...]) -> None:
        self._dest, self._schema, self._method, self._key = dest, schema, method, key
        self._replace_all, self._deferred_key = replace_all, deferred_key
        self._folder = dest.folder(schema.table)
        self._table_schema = dest.table_schema(schema.table)
        self._load_id = uuid.uuid4().hex[:12]
        self._arrow_schema = schema.arrow_schema()
        self._writer = self._new_writer(self._arrow_schema, self._load_id)
        self._pending: list[Path] = []  # temporary files not yet published
        self._done = False
        self._written = 0  # rows written by this load so far (the position of the next one)
        self._ops: list[KeyOp] = []  # delete_keys/update_columns calls, applied at commit in call order

    def write(self, batch: pa.RecordBatch) -> int:
        batch = _conform(batch, self._arrow_schema, table=self._schema.table)
        self._writer.write(batch)
        self._written += batch.num_rows
        return int(batch.num_rows)

    def write_binary(self, chunks: Iterator[bytes]) -> int:
        raise ConfigurationError("Parquet does not accept a PostgreSQL binary COPY stream")

    # ------------------------------------------------------------ deletes and column updates by key
    # Remembered and applied at commit, when the table is rewritten, in call order (connectors/_keys.py): each
    # touches the published rows and the rows this load wrote before the call, never the rows written after it,
    # so a later ``write`` of a key wins. The counts are those of the table as it stands at the call.

    def delete_keys(self, keys: pa.RecordBatch) -> int:
        """Remember to delete the rows whose key equals a row of ``keys`` (key columns only) at commit (an anti
        join in the rewrite); returns the rows of the table it deletes (rows a merge load staged excluded)."""
        key = self._match_key()
        check_delete_batch(keys, key, self._schema.table)
        rows = self._op_rows(pa.Table.from_batches([keys]), key, key)
        if rows.num_rows == 0:
            return 0
        op = KeyOp("delete", key, rows, (), self._written)
        found = self._matches_now(op)
        self._ops.append(op)
        return found

    def update_columns(self, rows: pa.RecordBatch) -> int:
        """Remember to set the non-key columns of ``rows`` on the rows with the same key at commit (other
        columns untouched, keys not in the table ignored, the last row of a key wins); returns the rows of the
        table it updates (rows a merge load staged excluded)."""
        key = self._match_key()
        others = update_targets(rows, key, self._schema.column_names, self._schema.table)
        table = self._op_rows(pa.Table.from_batches([rows]), key, (*key, *others))
        if table.num_rows == 0:
            return 0
        for name in others:
            f = self._arrow_schema.field(name)
            if not f.nullable and table[name].null_count:
                raise DataError(f"Parquet table {self._schema.table}: column {name!r} is NOT NULL but the rows to "
                                "update hold NULLs")
        op = KeyOp("update", key, table, tuple(others), self._written)
        found = self._matches_now(op)
        self._ops.append(op)
        return found

    def _match_key(self) -> tuple[str, ...]:
        """The load's key, else its deferred key, else the table's primary key (from ``_schema.json``)."""
        if self._done:
            raise ConfigurationError("this load was already committed or aborted")
        key = match_key(self._schema.table, self._key, self._deferred_key, self._table_schema.primary_key)
        unknown = [k for k in key if self._schema.column(k) is None]
        if unknown:
            raise ConfigurationError(f"key column(s) {unknown} of {self._schema.table} are not among the columns "
                                     "loaded")
        return key

    def _op_rows(self, table: pa.Table, key: Sequence[str], names: Sequence[str]) -> pa.Table:
        """The columns ``names`` in the load's types, without NULL keys (they match nothing), the last row of
        each key only."""
        schema = pa.schema([self._arrow_schema.field(n).with_nullable(True) for n in names])
        try:
            columns = [table[n].cast(schema.field(n).type) for n in names]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"Parquet table {self._schema.table}: {exc}") from exc
        return last_per_key(without_null_keys(pa.Table.from_arrays(columns, schema=schema), key), key)

    def _matches_now(self, op: KeyOp) -> int:
        """How many rows of the table as it stands now have a key of ``op``: the published rows (unless this
        load replaces them) and, except for merge (whose rows are staged), the rows written so far; the deletes
        remembered before are taken into account (updates never change keys)."""
        deletes = [o for o in self._ops if o.kind == "delete"]
        columns = list(op.key)
        found = 0
        old = [] if self._replace_all else data_files(self._folder)
        if old:
            table_schema = self._table_schema.arrow_schema()
            for batch in ds.dataset(old, schema=table_schema, format="parquet").to_batches(columns=columns):
                kept, _ = apply_ops(pa.Table.from_batches([batch]), deletes, None)
                found += hits(kept, op)
        if self._method != "merge":
            position = 0
            for path in self._writer.close():  # closed so it can be read; the next write opens a new file
                for batch in pq.ParquetFile(path).iter_batches(columns=columns):
                    at = pa.array(range(position, position + batch.num_rows), pa.int64())
                    kept, _ = apply_ops(pa.Table.from_batches([batch]), deletes, at)
                    found += hits(kept, op)
                    position += batch.num_rows
        return found

    def commit(self, marker: StateMarker | None) -> None:
        """Publish the load:

        1. close the temporary files of the load;
        2. merge: write the merged table (old rows without the loaded keys, then the loaded rows) as new
           temporary files, replacing the load's own; the remembered ``delete_keys``/``update_columns`` are
           applied to the old rows and to the rows loaded before each call, in call order, before the last row
           per key is taken; append/overwrite with such calls: rewrite the old and loaded rows likewise;
        3. rename the temporary files to their final names (each rename is atomic);
        4. overwrite, truncate, merge and rewrites: delete the files that were there before;
        5. record a deferred primary key in ``_schema.json``;
        6. write the marker (atomically), last, so it never describes data that is not in place.
        """
        if self._done:
            raise ConfigurationError("this load was already committed or aborted")
        self._pending = self._writer.close()
        old = data_files(self._folder)
        try:
            if self._method == "merge":
                self._pending = self._merge(self._pending, [] if self._replace_all else old)
            elif self._ops:
                self._pending = self._rewrite(self._pending, [] if self._replace_all else old)
            prefix = f"{_file_prefix(marker.run_id)}-{self._load_id}" if marker else self._load_id
            while self._pending:
                n = len(self._pending) - 1
                os.replace(self._pending.pop(), self._folder / f"{prefix}-{n:05d}.parquet")
        except BaseException:
            self.abort()
            raise
        self._done = True
        if self._replace_all or self._method == "merge" or self._ops:
            for path in old:
                path.unlink(missing_ok=True)
        if self._deferred_key:
            current = self._dest.table_schema(self._schema.table)
            self._dest.save_schema(replace(current, primary_key=self._deferred_key))
        if marker is not None:
            self._dest.write_marker(marker)

    def abort(self) -> None:
        """Delete the load's temporary files; the published files and the marker stay as they were."""
        for path in [*self._writer.close(), *self._pending]:
            path.unlink(missing_ok=True)
        self._pending = []
        self._done = True

    # ------------------------------------------------------------ merge

    def _merge(self, staged: list[Path], old: list[Path]) -> list[Path]:
        table_schema = self._table_schema.arrow_schema()
        loaded = ds.dataset(staged, schema=self._arrow_schema, format="parquet").to_table()
        if self._ops:  # each touches the rows loaded before it only
            loaded, _ = apply_ops(loaded, self._ops, pa.array(range(loaded.num_rows), pa.int64()))
        loaded = _last_per_key(loaded, self._key)
        keys = loaded.select(list(self._key))
        writer = self._new_writer(table_schema, f"{self._load_id}-merged")
        try:
            if old:
                for batch in ds.dataset(old, schema=table_schema, format="parquet").to_batches():
                    for changed in _with_ops(batch, self._ops):
                        for kept in _without_keys(changed, keys, self._key).to_batches():
                            writer.write(_conform(kept, table_schema, fill_missing=True))
            for batch in loaded.to_batches():
                writer.write(_conform(batch, table_schema, fill_missing=True))
        except BaseException:
            for path in writer.close():
                path.unlink(missing_ok=True)
            raise
        merged = writer.close()
        for path in staged:
            path.unlink(missing_ok=True)
        return merged

    def _rewrite(self, staged: list[Path], old: list[Path]) -> list[Path]:
        """Append/overwrite with remembered deletes/updates: the old rows, then the loaded rows, with them
        applied (each to the old rows and to the rows loaded before it), as new temporary files."""
        table_schema = self._table_schema.arrow_schema()
        writer = self._new_writer(table_schema, f"{self._load_id}-rewritten")
        try:
            if old:
                for batch in ds.dataset(old, schema=table_schema, format="parquet").to_batches():
                    for changed in _with_ops(batch, self._ops):
                        writer.write(_conform(changed, table_schema, fill_missing=True))
            position = 0
            for path in staged:
                for batch in pq.ParquetFile(path).iter_batches():
                    at = pa.array(range(position, position + batch.num_rows), pa.int64())
                    position += batch.num_rows
                    changed, _ = apply_ops(pa.Table.from_batches([batch]), self._ops, at)
                    for b in changed.to_batches():
                        writer.write(_conform(b, table_schema, fill_missing=True))
        except BaseException:
            for path in writer.close():
                path.unlink(missing_ok=True)
            raise
        rewritten = writer.close()
        for path in staged:
            path.unlink(missing_ok=True)
        return rewritten

    def _new_writer(self, schema: pa.Schema, load_id: str) -> _RollingWriter:
        return _RollingWriter(self._folder, schema, load_id, self._dest.rows_per_file, self._dest.compression)


def _with_ops(batch: pa.RecordBatch, ops: Sequence[KeyOp]) -> list[pa.RecordBatch]:
    """A batch of published rows with the remembered deletes and updates applied."""
    if not ops:
        return [batch]
    changed, _ = apply_ops(pa.Table.from_batches([batch]), ops, None)
    return changed.combine_chunks().to_batches()


def _file_prefix(run_id: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in run_id).lstrip("_.-")
    return cleaned[:64] or "run"


def _last_per_key(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """The last row of each key (rows arrive in load order: a later row replaces an earlier one)."""
    if table.num_rows == 0:
        return table
    position = "__copyjob_position"
    numbered = table.append_column(position, pa.array(range(table.num_rows), pa.int64()))
    last = numbered.group_by(list(key), use_threads=False).aggregate([(position, "max")])
    positions = last[f"{position}_max"].combine_chunks()
    return table.take(positions.take(pc.sort_indices(positions)))  # in load order


def _without_keys(batch: pa.RecordBatch, keys: pa.Table, key: Sequence[str]) -> pa.Table:
    """The rows of ``batch`` whose key is not in ``keys`` (an anti join)."""
    table = pa.Table.from_batches([batch])
    if len(key) == 1:
        column = keys.column(0).combine_chunks().cast(table.schema.field(key[0]).type)
        return table.filter(pc.invert(pc.is_in(table[key[0]], value_set=column)))
    return table.join(keys, list(key), join_type="left anti").select(table.column_names)


def _conform(batch: pa.RecordBatch, schema: pa.Schema, *, fill_missing: bool = False,
             table: object = None) -> pa.RecordBatch:
    """The batch's columns in ``schema`` order and types; NULL columns for missing ones when allowed. Errors
    name ``table`` when given (a DataError names the table)."""
    where = f"{table}: " if table is not None else ""
    arrays = []
    for f in schema:
        i = batch.schema.get_field_index(f.name)
        if i < 0:
            if not fill_missing or (not f.nullable and batch.num_rows):
                raise DataError(f"{where}the batch has no column {f.name!r}")
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        column = batch.column(i)
        if not f.nullable and column.null_count:
            raise DataError(f"{where}column {f.name!r} is NOT NULL but the batch holds NULLs (row "
                            f"{column.is_null().to_pylist().index(True) + 1} of the batch)")
        arrays.append(column if column.type == f.type else column.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)

