"""One source file as Arrow record batches: CSV, JSON lines and Parquet, streamed with bounded memory.

- CSV: ``pyarrow.csv.open_csv`` with an explicit block size; columns the table already has are read with its
  types, the others are inferred from the first block (a column empty there is read as text).
- JSON lines: blocks of whole lines, each parsed by ``pyarrow.json`` with the types found so far; a key first
  seen in a later block raises FileColumnsGrew (the copier adds the column and reads the file again).
- Parquet: ``ParquetFile.iter_batches`` (the footer gives the columns).

Arrow types are normalised to what copyjob's logical types carry (microsecond times, plain strings; nested
values become JSON text), then each batch is conformed to the table's columns by name.

A file that cannot be read raises BadFile naming the file and, for text formats, the line. Arrow's messages
rarely say the line, so on that error path only the file is read again in Python to find it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
import pyarrow.types as pt
from copyjob.connectors.files.filesystem import Root, open_random_access, open_stream
from copyjob.connectors.parquet import _conform

from copyjob.core.contracts import SOURCE_FILE_COLUMN, FileColumnsGrew, FileInfo, FileSet
from copyjob.core.errors import BadFile, CopyjobError
from copyjob.core.schema import Column, LogicalType, TableSchema, arrow_type, logical_from_arrow

BLOCK_BYTES = 2 << 20
"""Bytes per CSV block or JSON-lines block: one Arrow batch each, and the sample types are inferred from."""
SAMPLE_BYTES = 256 << 10
"""A quick look (checking a job before it runs): enough for the header and a first guess at the types."""
_CSV_TYPES = {"int16", "int32", "int64", "float32", "float64", "bool", "string", "uuid", "json", "date",
              "timestamp", "decimal"}
"""Logical kinds that pyarrow's CSV parser reads directly (timestamptz needs an offset in every value)."""
_JSON_TYPES = {"int16": pa.int64(), "int32": pa.int64(), "int64": pa.int64(), "float32": pa.float64(),
               "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string(), "uuid": pa.string()}
_FIELDS = re.compile(r"Expected (\d+) columns, got (\d+)")
_CONVERSION = re.compile(r"In CSV column #(\d+): CSV conversion error to (.+?): invalid value '(.*)'", re.S)
_JSON_ROW = re.compile(r"in row (\d+)")


def open_reader(root: Root, files: FileSet, file: FileInfo, known: TableSchema | None, *, batch_rows: int,
                sample: bool = False) -> BaseReader:
    """The reader for ``file`` (opened: its columns are known). Raises BadFile."""
    cls = {"csv": CsvReader, "jsonl": JsonLinesReader, "parquet": ParquetReader}[files.format]
    block = SAMPLE_BYTES if sample else BLOCK_BYTES
    # a small file in one block: no 2 MiB buffer for 40 kB (compressed files may take a few blocks)
    block = min(block, max(2 * file.size + 1024, 64 << 10))
    return cls(root, files, file, known, batch_rows=batch_rows, block_bytes=block)


class BaseReader:
    """Shared by the formats: normalising, the ``_source_file`` column, conforming, error translation."""

    def __init__(self, root: Root, files: FileSet, file: FileInfo, known: TableSchema | None, *,
                 batch_rows: int, block_bytes: int) -> None:
        self.root, self.files, self.file = root, files, file
        self.where = root.where(file.path)
        self.known = {c.name: c for c in known.columns} if known else {}
        self.batch_rows, self.block_bytes = batch_rows, block_bytes
        self.columns: tuple[Column, ...] = ()
        self._stream: pa.NativeFile | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        raise NotImplementedError

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def batches(self, schema: TableSchema) -> Iterator[pa.RecordBatch]:
        target = schema.arrow_schema()
        for raw in self._raw_batches():
            batch = normalized(raw)
            if self.files.source_file_column:
                batch = self._with_source_file(batch)
            try:
                yield _conform(batch, target, fill_missing=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, CopyjobError) as exc:
                raise self.bad(f"a value does not fit the table's column type: {exc}") from exc

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def bad(self, problem: str, line: int | None = None) -> BadFile:
        return BadFile(" ".join(problem.split()), file=self.where, line=line)

    def _set_columns(self, schema: pa.Schema, *, first_line: int | None = None) -> None:
        names = [f.name for f in schema]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise self.bad(f"column name(s) {', '.join(twice)} appear more than once", first_line)
        columns = [Column(f.name, self.known[f.name].type if f.name in self.known else logical_type(f))
                   for f in schema if f.name != SOURCE_FILE_COLUMN]
        if self.files.source_file_column:
            columns.append(Column(SOURCE_FILE_COLUMN, LogicalType("string")))
        self.columns = tuple(columns)

    def _with_source_file(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        i = batch.schema.get_field_index(SOURCE_FILE_COLUMN)
        if i >= 0:
            batch = batch.remove_column(i)
        return batch.append_column(SOURCE_FILE_COLUMN, pa.array([self.file.path] * batch.num_rows, pa.string()))

    def _open_stream(self) -> pa.NativeFile:
        try:
            self._stream = open_stream(self.root, self.file.path)
        except OSError as exc:
            raise self.bad(f"cannot open: {exc}") from exc
        return self._stream


# ---------------------------------------------------------------- CSV


class CsvReader(BaseReader):
    def _open(self) -> None:
        if self.file.size == 0:
            return  # an empty file: no columns, no rows
        self._reader = self._csv(self.known_types())
        schema = self._reader.schema
        empty = {f.name: pa.string() for f in schema if pt.is_null(f.type)}
        if empty:  # every value of the first block empty: read it as text
            self.close()
            self._reader = self._csv({**self.known_types(), **empty})
            schema = self._reader.schema
        if any(pt.is_binary(f.type) for f in schema):  # Arrow's way of saying "not valid UTF-8"
            raise self._located(UnicodeError("not valid UTF-8"))
        self._set_columns(schema, first_line=1 if self.files.csv.header else None)

    def known_types(self) -> dict[str, pa.DataType]:
        return {name: arrow_type(c.type) for name, c in self.known.items() if c.type.kind in _CSV_TYPES}

    def _csv(self, types: dict[str, pa.DataType]) -> pcsv.CSVStreamingReader:
        o = self.files.csv
        stream = self._open_stream()
        try:
            return pcsv.open_csv(
                stream,
                read_options=pcsv.ReadOptions(block_size=self.block_bytes, encoding=o.encoding,
                                              autogenerate_column_names=not o.header),
                parse_options=pcsv.ParseOptions(delimiter=o.delimiter, quote_char=o.quote_char or False),
                convert_options=pcsv.ConvertOptions(column_types=types, null_values=list(o.null_values),
                                                    strings_can_be_null=True))
        except (pa.ArrowInvalid, UnicodeError, OSError) as exc:
            raise self._located(exc) from exc

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        if self.file.size == 0:
            return
        while True:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, UnicodeError, OSError) as exc:
                raise self._located(exc) from exc
            yield batch

    def _located(self, exc: BaseException) -> BadFile:
        """The BadFile for a CSV error, with the line found by reading the file again (error path only)."""
        text = " ".join(str(exc).split())
        encoding = self.files.csv.encoding
        if isinstance(exc, UnicodeError) or "invalid UTF8" in text:
            return self.bad(f"cannot be decoded as {encoding}", self._undecodable_line())
        if m := _FIELDS.search(text):
            want = int(m[1])
            return self.bad(f"expected {want} fields, got {m[2]}", self._row_line(lambda row: len(row) != want))
        if m := _CONVERSION.search(str(exc)):
            column, value = int(m[1]), m[3]
            line = self._row_line(lambda row: len(row) > column and row[column] == value, skip_header=True)
            return self.bad(f"column {column + 1}: {value!r} is not a valid {m[2]}", line)
        return self.bad(text.removeprefix("CSV parse error: "))

    def _row_line(self, wrong: Callable[[list[str]], bool], *, skip_header: bool = False) -> int | None:
        o = self.files.csv
        try:
            with open_stream(self.root, self.file.path) as raw:
                text = io.TextIOWrapper(raw, encoding=o.encoding, errors="replace", newline="")
                reader = csv.reader(text, delimiter=o.delimiter, quotechar=o.quote_char or '"',
                                    quoting=csv.QUOTE_MINIMAL if o.quote_char else csv.QUOTE_NONE)
                for row in reader:
                    if skip_header and reader.line_num == 1 and o.header:
                        continue
                    if row and wrong(row):
                        return reader.line_num
        except (OSError, csv.Error):
            return None
        return None

    def _undecodable_line(self) -> int | None:
        return undecodable_line(self.root, self.file, self.files.csv.encoding)


def undecodable_line(root: Root, file: FileInfo, encoding: str) -> int | None:
    """The first line with bytes that do not decode (1-based), reading raw lines through an incremental
    decoder so that multi-byte characters split across reads still decode."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        return None
    line = 1
    try:
        with open_stream(root, file.path) as raw:
            for chunk in _raw_lines(raw):
                try:
                    line += decoder.decode(chunk).count("\n")
                except UnicodeDecodeError:
                    return line
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return line
    except OSError:
        return None
    return None


def _raw_lines(stream: pa.NativeFile) -> Iterator[bytes]:
    pending = b""
    while chunk := stream.read(1 << 20):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


# ---------------------------------------------------------------- JSON lines


class JsonLinesReader(BaseReader):
    """Blocks of whole lines: the line number of each block is known, so errors name the exact line."""

    def _open(self) -> None:
        self._open_stream()
        self._pending = b""
        self._line = 1  # line number of the next block's first line
        self._first = self._next_table()
        self._types = self._explicit_types(self._first.schema if self._first is not None else pa.schema([]))
        self._set_columns(self._first.schema if self._first is not None else pa.schema([]))

    def _explicit_types(self, seen: pa.Schema) -> dict[str, pa.DataType]:
        """Types that later blocks are parsed with: the table's, else the first block's (scalars only:
        nested values keep being inferred and become JSON text)."""
        types = {f.name: f.type for f in seen if not pt.is_nested(f.type) and not pt.is_null(f.type)}
        for name, c in self.known.items():
            if c.type.kind in _JSON_TYPES:
                types[name] = _JSON_TYPES[c.type.kind]
        return types

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        table, self._first = self._first, None
        while table is not None:
            grown = [f for f in table.schema if f.name not in {c.name for c in self.columns}]
            if grown:
                raise FileColumnsGrew([Column(f.name, logical_type(f)) for f in grown])
            yield from table.to_batches(max_chunksize=self.batch_rows)
            table = self._next_table()

    def _next_table(self) -> pa.Table | None:
        while (block := self._next_block()) is not None:
            start, self._line = self._line, self._line + block.count(b"\n")
            if block.strip():
                return self._parse(block, start)
        return None

    def _parse(self, block: bytes, start: int) -> pa.Table:
        try:
            block.decode("utf-8")  # pyarrow would put U+FFFD in place of bad bytes without a word
        except UnicodeDecodeError as exc:
            raise self.bad("cannot be decoded as utf-8", start + block.count(b"\n", 0, exc.start)) from exc
        explicit = getattr(self, "_types", None) or self._explicit_types(pa.schema([]))
        schema = pa.schema([pa.field(n, t) for n, t in explicit.items()])
        try:
            return pjson.read_json(pa.BufferReader(block),
                                   read_options=pjson.ReadOptions(block_size=len(block) + 1, use_threads=False),
                                   parse_options=pjson.ParseOptions(explicit_schema=schema,
                                                                    unexpected_field_behavior="infer"))
        except pa.ArrowInvalid as exc:
            raise self.bad(str(exc).removeprefix("JSON parse error: "), _json_line(block, start, exc)) from exc

    def _next_block(self) -> bytes | None:
        """About ``block_bytes`` of whole lines (a longer line is taken whole), or None at the end."""
        assert self._stream is not None
        data = self._pending
        while len(data) < self.block_bytes:
            chunk = self._stream.read(min(1 << 20, self.block_bytes - len(data)))
            if not chunk:  # the end: the rest, whether or not it ends with a newline
                self._pending = b""
                return data or None
            data += chunk
        cut = data.rfind(b"\n") + 1
        while cut == 0:  # one line longer than a block: read on to its end
            chunk = self._stream.read(1 << 20)
            if not chunk:
                cut = len(data)
                break
            data += chunk
            cut = data.rfind(b"\n") + 1
        block, self._pending = data[:cut], data[cut:]
        return block


def _json_line(block: bytes, start: int, exc: BaseException) -> int | None:
    """The line of a JSON error: the first line that is not a JSON object, else Arrow's 'row N' (0-based,
    counting non-blank lines)."""
    lines = block.split(b"\n")
    for i, raw in enumerate(lines):
        if raw.strip():
            try:
                if not isinstance(json.loads(raw), dict):
                    return start + i
            except ValueError:
                return start + i
    m = _JSON_ROW.search(str(exc))
    if m:
        wanted = int(m[1])
        rows = [i for i, raw in enumerate(lines) if raw.strip()]
        if wanted < len(rows):
            return start + rows[wanted]
    return None


# ---------------------------------------------------------------- Parquet


class ParquetReader(BaseReader):
    def _open(self) -> None:
        try:
            self._stream = open_random_access(self.root, self.file.path)
            self._file = pq.ParquetFile(self._stream)
        except (pa.ArrowException, OSError) as exc:
            raise self.bad(f"not a readable Parquet file: {exc}") from exc
        self._set_columns(self._file.schema_arrow)

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        batches = self._file.iter_batches(batch_size=self.batch_rows)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise self.bad(f"broken Parquet data: {exc}") from exc
            yield batch


# ---------------------------------------------------------------- Arrow types


def logical_type(f: pa.Field) -> LogicalType:
    if pt.is_nested(f.type):
        return LogicalType("json")
    if pt.is_null(f.type):
        return LogicalType("string")
    return logical_from_arrow(_normal_type(f.type), f.metadata)


def _normal_type(t: pa.DataType) -> pa.DataType:
    """The Arrow type copyjob carries for ``t`` (nested types are handled apart: JSON text)."""
    if pt.is_dictionary(t):
        return _normal_type(t.value_type)
    if pt.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pt.is_time(t):
        return pa.time64("us")
    if pt.is_date64(t):
        return pa.date32()
    if pt.is_large_string(t) or pt.is_null(t):
        return pa.string()
    if pt.is_large_binary(t):
        return pa.binary()
    if pt.is_float16(t):
        return pa.float32()
    return t


def normalized(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Microsecond times, plain strings, nested values as JSON text."""
    arrays, fields, changed = [], [], False
    for f, column in zip(batch.schema, batch.columns, strict=True):
        if pt.is_nested(f.type):
            column, changed = _json_text(column), True
        else:
            want = _normal_type(f.type)
            if want != f.type:
                lossy = pt.is_timestamp(f.type) or pt.is_time(f.type)  # below a microsecond: truncated
                column, changed = column.cast(want, safe=not lossy), True
        arrays.append(column)
        fields.append(pa.field(f.name, column.type, metadata=f.metadata))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)) if changed else batch


def _json_text(column: pa.Array) -> pa.Array:
    def dumps(value: Any) -> str | None:
        return None if value is None else json.dumps(value, default=str, separators=(",", ":"))

    return pa.array([dumps(v) for v in column.to_pylist()], pa.string())
