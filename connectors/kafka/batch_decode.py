"""Avro envelopes of many messages into one Arrow batch of their ``after`` images, column by column.

The apply side's fast path. All messages must share one writer schema and be upserts (``before`` null, an
``after`` image, op ``r``/``c``/``u``): the snapshot and watermark-poller case. The messages are joined into
one buffer and parsed for every row at once: a position per row moves through the fields, and each step
gathers the bytes at those positions with ``take`` (varints: one gather per byte of the longest value).

:func:`decode_upserts` returns None whenever the messages are not of that shape (a delete, a ``before``
image, a decimal wider than 18 digits, an odd uuid spelling): the caller then decodes message by message.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from copyjob.connectors.kafka.arrow_bytes import I64, U64, slices, u64

from copyjob.core.schema import Column, LogicalType, arrow_type

_UPSERT_OPS = pa.array([ord("r"), ord("c"), ord("u")], pa.uint8())
_PAD = b"\x00" * 16  # gathers a few bytes past the last message stay inside the buffer
_INTEGERS = {"int16", "int32", "int64", "date", "time", "timestamp", "timestamptz"}
_STRINGS = {"string", "json", "uuid"}


class NotUpserts(Exception):
    """The messages are not all simple upserts of one schema (or hold something this module cannot read)."""


class _Cursor:
    """The whole message buffer and, per row, the offset of the next field."""

    def __init__(self, values: Sequence[bytes], header: int) -> None:
        lengths = pa.array(list(map(len, values)), I64)
        self.data = pa.Array.from_buffers(pa.uint8(), sum(lengths.to_pylist()) + len(_PAD),
                                          [None, pa.py_buffer(b"".join(values) + _PAD)])
        self.ends = pc.cumulative_sum(lengths)
        self.pos: pa.Array = pc.add(pc.subtract(self.ends, lengths), pa.scalar(header, I64))
        self.n = len(values)

    def byte(self, ahead: int = 0) -> pa.Array:
        at = self.pos if ahead == 0 else pc.add(self.pos, pa.scalar(ahead, I64))
        return pc.take(self.data, at)

    def advance(self, by: pa.Array | int) -> None:
        step = pa.scalar(by, I64) if isinstance(by, int) else pc.cast(by, I64)
        self.pos = pc.add(self.pos, step)

    def varint(self, active: pa.Array) -> pa.Array:
        """The zigzag-decoded int64 at each active row (0 elsewhere); moves past it."""
        value = pa.repeat(u64(0), self.n)
        length = pa.repeat(pa.scalar(0, I64), self.n)
        alive = active
        for k in range(10):
            if not pc.any(alive).as_py():
                break
            b = pc.cast(self.byte(k), U64)
            group = pc.shift_left(pc.bit_wise_and(b, u64(0x7F)), u64(7 * k))
            value = pc.if_else(alive, pc.bit_wise_or(value, group), value)
            length = pc.add(length, pc.cast(alive, I64))
            alive = pc.and_(alive, pc.not_equal(pc.bit_wise_and(b, u64(0x80)), u64(0)))
        else:
            if pc.any(alive).as_py():
                raise NotUpserts("a varint longer than 10 bytes")
        self.advance(length)
        negative = pc.equal(pc.bit_wise_and(value, u64(1)), u64(1))
        mask = pc.if_else(negative, u64(0xFFFFFFFFFFFFFFFF), u64(0))
        return pc.bit_wise_xor(pc.shift_right(value, u64(1)), mask).view(I64)


def decode_upserts(values: Sequence[bytes], header: int, columns: Sequence[Column]) -> tuple[pa.RecordBatch,
                                                                                              pa.Array] | None:
    """The ``after`` images of envelopes written with one schema (``header`` bytes of prefix each), as a batch
    in the columns' Arrow types (source names), and each message's op; None when they are not all upserts."""
    if not values:
        return None
    try:
        cursor = _Cursor(values, header)
        _expect(cursor.byte(0), 0)  # before: null
        _expect(cursor.byte(1), 2)  # after: the Value record
        cursor.advance(2)
        arrays = [_field(cursor, c.type) for c in columns]
        _expect(cursor.byte(0), 2)  # op: a string of one character
        ops = cursor.byte(1)
        if not pc.all(pc.is_in(ops, value_set=_UPSERT_OPS)).as_py():
            raise NotUpserts("not only r/c/u")
        cursor.advance(2)
        _skip_source_and_ts(cursor)
        # every message must end exactly there: a truncated or padded one would otherwise be read across its
        # neighbour's bytes without an error (the event path then reports it)
        if not pc.all(pc.equal(cursor.pos, cursor.ends)).as_py():
            raise NotUpserts("a message does not end where its envelope does")
    except (NotUpserts, pa.ArrowException):
        return None
    schema = pa.schema([pa.field(c.name, arrow_type(c.type)) for c in columns])
    return pa.RecordBatch.from_arrays(arrays, schema=schema), ops


def _skip_source_and_ts(cursor: _Cursor) -> None:
    """Past the source record (connector, db, schema ∈ null|string, table, snapshot, position, ts_ms) and the
    envelope's ts_ms."""
    everyone = pa.repeat(pa.scalar(True), cursor.n)
    for name in ("connector", "db", "schema", "table", "snapshot", "position"):
        active = everyone
        if name == "schema":
            active = pc.equal(cursor.byte(), pa.scalar(2, pa.uint8()))
            cursor.advance(1)
        cursor.advance(cursor.varint(active))
    cursor.varint(everyone)
    cursor.varint(everyone)


def _expect(found: pa.Array, byte: int) -> None:
    if not pc.all(pc.equal(found, pa.scalar(byte, pa.uint8()))).as_py():
        raise NotUpserts(f"expected byte {byte}")


def _field(cursor: _Cursor, t: LogicalType) -> pa.Array:
    """One ``["null", T]`` field of every row, as an Arrow array of T's Arrow type."""
    branch = cursor.byte()
    valid = pc.equal(branch, pa.scalar(2, pa.uint8()))
    if not pc.all(pc.or_(valid, pc.equal(branch, pa.scalar(0, pa.uint8())))).as_py():
        raise NotUpserts("a union branch other than null or the value")
    cursor.advance(1)
    values = _value(cursor, t, valid)
    wanted = arrow_type(t)
    if values.type != wanted:
        values = pc.cast(values, wanted)
    if pc.all(valid).as_py():
        return values
    return pc.if_else(valid, values, pa.scalar(None, wanted))


def _value(cursor: _Cursor, t: LogicalType, valid: pa.Array) -> pa.Array:
    kind = t.kind
    if kind in _INTEGERS:
        ints = cursor.varint(valid)
        if kind == "date":
            return pc.cast(pc.cast(ints, pa.int32()), pa.date32())
        return ints
    if kind == "float64" or kind == "float32":
        width = 8 if kind == "float64" else 4
        raw = _gather(cursor, pa.repeat(pa.scalar(width, I64), cursor.n))
        cursor.advance(pc.multiply(pc.cast(valid, I64), pa.scalar(width, I64)))
        return pa.Array.from_buffers(pa.float64() if width == 8 else pa.float32(), cursor.n,
                                     [None, _data_buffer(raw)])
    if kind == "bool":
        flags = pc.not_equal(cursor.byte(), pa.scalar(0, pa.uint8()))
        cursor.advance(pc.cast(valid, I64))
        return flags
    if kind in _STRINGS or kind == "binary" or (kind == "decimal" and t.precision is None):
        sizes = cursor.varint(valid)
        if pc.any(pc.less(sizes, pa.scalar(0, I64))).as_py():
            raise NotUpserts("a negative length")
        raw = _gather(cursor, sizes)
        cursor.advance(sizes)
        if kind == "binary":
            return raw
        text = pc.cast(raw, pa.string())
        if kind == "uuid":  # fastavro hands out uuid.UUID, printed lower-case with hyphens: only that spelling
            if not pc.all(pc.or_(pc.invert(valid), pc.equal(pc.binary_length(raw), 36))).as_py():
                raise NotUpserts("a uuid not in its 36-character form")
            text = pc.utf8_lower(text)
        return text
    if kind == "decimal":
        return _decimals(cursor, t, valid)
    raise NotUpserts(kind)


def _gather(cursor: _Cursor, sizes: pa.Array) -> pa.BinaryArray:
    return slices(cursor.data, cursor.pos, sizes)


def _data_buffer(binary: pa.Array) -> pa.Buffer:
    buffer: pa.Buffer = binary.buffers()[2]  # slices() starts its offsets and data at 0
    return buffer


def _wide_decimals(cursor: _Cursor, t: LogicalType, sizes: pa.Array) -> pa.Array:
    """Past 18 digits the int64 arithmetic does not hold: Python ints for this column (rare in practice)."""
    raw = _gather(cursor, sizes)
    cursor.advance(sizes)
    scale = t.scale or 0
    # scaleb rounds to its context's precision (28 digits by default): give it room for decimal256's 76
    exact = decimal.Context(prec=80)
    out = [None if not b else decimal.Decimal(int.from_bytes(b, "big", signed=True)).scaleb(-scale, exact)
           for b in raw.to_pylist()]
    return pa.array(out, arrow_type(t))


def _decimals(cursor: _Cursor, t: LogicalType, valid: pa.Array) -> pa.Array:
    """Big-endian two's complement of up to 8 bytes → decimal128 (wider values take the slow path)."""
    sizes = cursor.varint(valid)
    longest = pc.max(sizes).as_py() or 0
    if longest > 8 or (t.precision or 0) > 18:
        return _wide_decimals(cursor, t, sizes)
    value = pa.repeat(u64(0), cursor.n)
    for j in range(longest):
        b = pc.cast(cursor.byte(j), U64)
        value = pc.if_else(pc.greater(sizes, pa.scalar(j, I64)),
                           pc.bit_wise_or(pc.shift_left(value, u64(8)), b), value)
    first = pc.cast(cursor.byte(0), U64)
    negative = pc.and_(pc.greater(sizes, pa.scalar(0, I64)),
                       pc.not_equal(pc.bit_wise_and(first, u64(0x80)), u64(0)))
    short = pc.less(sizes, pa.scalar(8, I64))
    bits = pc.cast(pc.multiply(pc.min_element_wise(sizes, pa.scalar(7, I64)), pa.scalar(8, I64)), U64)
    fill = pc.shift_left(pa.repeat(u64(0xFFFFFFFFFFFFFFFF), cursor.n), bits)  # sign extension of short values
    value = pc.if_else(pc.and_(negative, short), pc.bit_wise_or(value, fill), value)
    cursor.advance(sizes)
    # the int64 unscaled value as decimal128(19, 0) has the same 16 bytes as the wanted decimal: relabel them
    whole = pc.cast(value.view(I64), pa.decimal128(19, 0))
    return pa.Array.from_buffers(pa.decimal128(t.precision, t.scale or 0), cursor.n, [None, whole.buffers()[1]],
                                 offset=whole.offset)
