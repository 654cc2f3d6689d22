"""A run of inserts of one relation kept column-wise while pgoutput streams it (``PgOutputDecoder`` with
``columnar=True``): each column's text values are collected as they arrive and become one Arrow array when
the chunk is cut, so a bulk load costs no Python object per value (:class:`copyjob.core.changes.ColumnarInserts`).

Texts Arrow parses exactly as the column's text converter does (integers, strings, dates and timestamps in
PostgreSQL's ISO output; ``t``/``f`` booleans) are cast by Arrow; every other column goes through its converter,
value by value, as the row-wise decoder does. A column Arrow refuses (``infinity``, a BC date) goes through the
converters too, and a run Arrow cannot hold at all is handed out as ordinary events: the values are always
those of the row-wise path.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from copyjob.ingest.postgres_cdc._types import conversion_error

from copyjob.core.changes import ChangeEvent, ColumnarInserts, new_event
from copyjob.core.errors import ConnectorError
from copyjob.core.schema import TableSchema, arrow_type

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_BINARY = pa.binary()
_STRING = pa.string()
_PARSED_BY_ARROW = {"int16", "int32", "int64", "date", "timestamp", "timestamptz"}

Converter = Any  # Callable[[bytes], Any]: the relation's text converter of a column


class InsertColumns:
    """The inserts of one relation since the chunk began, one list of raw texts per column."""

    __slots__ = ("converters", "lsns", "schema", "seqs", "texts", "ts_ms")

    def __init__(self, schema: TableSchema, converters: Sequence[tuple[str, Converter]]) -> None:
        """``converters``: (column name, text converter) per column, as the relation decodes rows
        (``bytes.decode`` for text kept as it is)."""
        self.schema = schema
        self.converters = converters
        self.texts: list[list[bytes | None]] = [[] for _ in converters]
        self.lsns: list[int] = []
        self.seqs: list[int] = []
        self.ts_ms: list[int] = []

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, buf: bytes, pos: int, lsn: int, seq: int, ts_ms: int) -> None:
        """The TupleData of an Insert at ``pos``."""
        texts = self.texts
        if _U16(buf, pos)[0] != len(texts):
            raise ConnectorError(f"{self.schema.table}: a row has {_U16(buf, pos)[0]} columns, its relation "
                                 f"{len(texts)}")
        pos += 2
        for column in texts:
            kind = buf[pos]
            if kind == 116:  # 't': Int32 length, then the text
                start = pos + 5
                pos = start + _U32(buf, pos + 1)[0]
                column.append(buf[start:pos])
            elif kind == 110:  # 'n'
                column.append(None)
                pos += 1
            else:  # an insert has no unchanged TOASTed value ('u'); binary ('b') is never requested
                raise ConnectorError(f"{self.schema.table}: unexpected pgoutput tuple data kind {chr(kind)!r} "
                                     "in an insert")
        self.lsns.append(lsn)
        self.seqs.append(seq)
        self.ts_ms.append(ts_ms)

    def build(self) -> Sequence[ChangeEvent]:
        """The run as :class:`ColumnarInserts`, or as events when Arrow cannot hold a value."""
        try:
            arrays = [self._array(i) for i in range(len(self.texts))]
            rows = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(
                [pa.field(c.name, arrow_type(c.type)) for c in self.schema.columns]))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return self.events()
        return PgInserts(rows, self)

    def events(self) -> list[ChangeEvent]:
        """The run as ``c`` events whose images hold the converters' values (the row-wise decoder's)."""
        return [new_event("c", None, image, {"lsn": lsn, "seq": seq}, ts)
                for image, lsn, seq, ts in zip(self.images(), self.lsns, self.seqs, self.ts_ms, strict=True)]

    def images(self) -> list[dict[str, Any]]:
        names = [name for name, _ in self.converters]
        columns = [self._converted(i) for i in range(len(self.texts))]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]

    def image(self, row: int) -> dict[str, Any]:
        return {name: self._convert(name, convert, column[row])
                for (name, convert), column in zip(self.converters, self.texts, strict=True)}

    def _array(self, i: int) -> pa.Array:
        column = self.schema.columns[i]
        kind, target = column.type.kind, arrow_type(column.type)
        texts = self.texts[i]
        if target == _STRING and self.converters[i][1] is bytes.decode:
            try:
                return pc.cast(pa.array(texts, _BINARY), _STRING)
            except pa.ArrowInvalid:  # not UTF-8: the converter says which value
                pass
        elif kind in _PARSED_BY_ARROW:
            try:
                return pc.cast(pc.cast(pa.array(texts, _BINARY), _STRING), target)
            except pa.ArrowInvalid:  # infinity, BC, past 9999, not UTF-8: the converter knows them
                pass
        elif kind == "bool":
            return pc.equal(pa.array(texts, _BINARY), pa.scalar(b"t", _BINARY))
        return pa.array(self._converted(i), target)

    def _converted(self, i: int) -> list[Any]:
        name, convert = self.converters[i]
        try:
            return [None if text is None else convert(text) for text in self.texts[i]]
        except (ValueError, TypeError, ArithmeticError):
            return [self._convert(name, convert, text) for text in self.texts[i]]  # raises, naming the value

    def _convert(self, name: str, convert: Converter, text: bytes | None) -> Any:
        try:
            return None if text is None else convert(text)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise conversion_error(self.schema.table, name, text or b"", exc) from exc


class PgInserts(ColumnarInserts):
    """:class:`ColumnarInserts` whose Python images are the text converters' (as the row-wise decoder's)."""

    __slots__ = ("_texts",)

    def __init__(self, rows: pa.RecordBatch, texts: InsertColumns) -> None:
        super().__init__(rows, {"lsn": texts.lsns, "seq": texts.seqs}, texts.ts_ms)
        self._texts = texts

    def image(self, index: int) -> dict[str, Any]:
        return self._texts.image(index if index >= 0 else index + len(self))

    def images(self) -> list[dict[str, Any]]:
        return self._texts.images()

    def events(self) -> list[ChangeEvent]:
        if self._events is None:
            self._events = self._texts.events()
        return self._events
