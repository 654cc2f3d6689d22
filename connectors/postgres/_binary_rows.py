"""Arrow columns → PostgreSQL's binary COPY format, a whole batch at a time.

Each column becomes an Arrow binary array whose value i is row i's complete COPY field (int32 big-endian
length, then the payload; or the NULL marker), built with Arrow compute and byte swaps in C
(``array.array.byteswap``: Arrow keeps numbers little-endian, the wire wants network order). A row is then
one element-wise join of the field count and its fields, and the joined bytes go to ``copy.write`` as they
are: no Python object per value for the common types. A column this module cannot vectorise (an interval, a
numeric wider than 18 digits, a uuid spelt with braces, ...) is dumped value by value with psycopg's own
binary dumpers, the ones ``write_row`` uses, and joined with the others all the same.

``encode`` returns None when a value cannot be written (an integer out of range, a string that is no uuid):
the caller then writes the batch row by row, whose error names the row and the column. Every such check
happens before the COPY starts, so that retry loses nothing.
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Iterator, Sequence

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pt
from copyjob.connectors.postgres import _wire
from copyjob.connectors.postgres._wire import Planned
from psycopg import pq
from psycopg.abc import AdaptContext
from psycopg.adapt import PyFormat, Transformer

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # signature, flags, header extension length
TRAILER = struct.pack("!h", -1)
NULL_FIELD = struct.pack("!i", -1)
CHUNK_ROWS = 65_536  # rows joined and written at a time: bounds the extra memory, keeps offsets 32-bit
_MAX_BINARY = 2**31 - 1  # bytes an Arrow binary (not large_binary) array can hold
_SWAP = sys.byteorder == "little"
_INT_TYPES = {"int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64()}
_FLOAT_TYPES = {"float4": pa.float32(), "float8": pa.float64()}
_TEXT_COPY_TYPES = {"text", "json"}  # payload = the UTF-8 bytes (jsonb adds a version byte)
_TYPECODES = {2: "h", 4: "i", 8: "q"}
_MAX_DECIMAL_DIGITS = 18  # the unscaled value fits an int64


class _Unencodable(Exception):
    """A value this module will not write: the row-by-row path takes the batch and names the row."""


# value problems only (pa.ArrowInvalid is a ValueError): a missing kernel or a bug here must not hide
_NOT_ENCODABLE = (_Unencodable, ValueError, TypeError, ArithmeticError, psycopg.DataError)


def encode(columns: Sequence[Planned], context: AdaptContext) -> list[pa.Array] | None:
    """Each column's COPY fields (binary arrays of equal length), or None when some value cannot be encoded
    here. ``context`` (the cursor) supplies psycopg's dumpers for the columns that are not vectorised."""
    try:
        return [_fields(c, context) for c in columns]
    except _NOT_ENCODABLE:
        return None


def chunks(fields: Sequence[pa.Array], num_rows: int) -> Iterator[bytes | memoryview]:
    """The whole COPY data for rows made of ``fields``: the header, the rows a chunk at a time, the trailer."""
    yield HEADER
    count = struct.pack("!h", len(fields))
    for start in range(0, num_rows, CHUNK_ROWS):
        if not fields:
            yield count * min(CHUNK_ROWS, num_rows - start)
            continue
        parts = [f.slice(start, CHUNK_ROWS) for f in fields]
        if sum(_data_size(p) for p in parts) > _MAX_BINARY - 2 * len(parts[0]):
            parts = [p.cast(pa.large_binary()) for p in parts]  # rows too big for 32-bit offsets
        yield _data(_concat(count, *parts))
    yield TRAILER


# ------------------------------------------------------------ one column


def _fields(planned: Planned, context: AdaptContext) -> pa.Array:
    fields = _vectorised(planned)
    return _dumped(planned, context) if fields is None else fields


def _vectorised(planned: Planned) -> pa.Array | None:
    """The column's fields built with Arrow compute, or None when its type pair is not covered here."""
    column, wire = planned.column, planned.wire
    copy_type = wire.copy_type
    if wire.convert is not None:  # values that need a Python conversion: only uuids have a vectorised one
        return _uuid_fields(planned.array) if copy_type == "uuid" else None
    values = wire.prepare(planned.array) if wire.prepare else planned.array
    arrow = values.type
    if copy_type in _INT_TYPES and pt.is_integer(arrow):
        if _wire.first_out_of_range(column, values) is not None:
            raise _Unencodable(column.name)
        return _fixed_fields(values.cast(_INT_TYPES[copy_type]))
    if copy_type in _FLOAT_TYPES and pt.is_floating(arrow):
        # a double too big for float4 becomes infinity, as psycopg's float4 dumper makes it
        return _fixed_fields(values.cast(_FLOAT_TYPES[copy_type], safe=False))
    if copy_type == "bool" and pt.is_boolean(arrow):
        return _with_nulls(pc.if_else(values, _field(b"\x01"), _field(b"\x00")))
    if copy_type in (*_TEXT_COPY_TYPES, "jsonb") and (pt.is_string(arrow) or pt.is_large_string(arrow)):
        utf8 = values.view(pa.large_binary() if pt.is_large_string(arrow) else pa.binary())
        if copy_type == "jsonb":  # jsonb's binary format: version 1, then the text
            utf8 = _concat(b"\x01", utf8)
        return _variable_fields(utf8)
    if copy_type == "bytea" and (pt.is_binary(arrow) or pt.is_large_binary(arrow)):
        return _variable_fields(values)
    if copy_type == "bytea" and pt.is_fixed_size_binary(arrow):
        return _variable_fields(values.cast(pa.binary()))
    if copy_type == "numeric" and pt.is_decimal128(arrow):
        return _numeric_fields(values)
    return None


def _dumped(planned: Planned, context: AdaptContext) -> pa.Array:
    """The column's fields from psycopg's binary dumper for its COPY type, one value at a time."""
    values = _wire.python_values(planned, _not_encodable)
    try:
        oid = context.adapters.types.get_oid(planned.wire.copy_type)
    except KeyError as exc:
        raise _Unencodable(planned.wire.copy_type) from exc
    tx = Transformer.from_context(context)
    tx.set_dumper_types([oid], pq.Format.BINARY)
    dump, formats = tx.dump_sequence, (PyFormat.BINARY,)
    payloads: list[bytes | None] = []
    for v in values:
        dumped = None if v is None else dump((v,), formats)[0]  # a dumper may write a value as NULL too
        payloads.append(None if dumped is None else bytes(dumped))
    return _variable_fields(pa.array(payloads, pa.binary()))


def _not_encodable(index: int, what: str) -> Exception:
    return _Unencodable(f"row {index + 1}: {what}")


# ------------------------------------------------------------ payloads by type


def _fixed_fields(values: pa.Array) -> pa.Array:
    """Fields of a fixed-width number array (integers, floats): its bytes in network order."""
    width = values.type.byte_width
    return _with_nulls(_prefixed(width, _big_endian(values, width).cast(pa.binary())))


def _uuid_fields(values: pa.Array) -> pa.Array | None:
    """uuids from their 16 bytes or their 32 hex digits (hyphens anywhere, as Python's uuid.UUID takes them);
    other spellings (braces, urn:uuid:) take the dumper path."""
    arrow = values.type
    if isinstance(arrow, pa.ExtensionType):
        values, arrow = values.storage, arrow.storage_type
    if pt.is_fixed_size_binary(arrow) and arrow.byte_width == 16:
        return _with_nulls(_prefixed(16, values.cast(pa.binary())))
    if not (pt.is_string(arrow) or pt.is_large_string(arrow)):
        return None
    digits = pc.replace_substring(values, "-", "").fill_null("0" * 32)
    if pc.all(pc.match_substring_regex(digits, "^[0-9a-fA-F]{32}$")).as_py() is False:
        return None
    raw = bytes.fromhex(str(_data(digits), "ascii"))  # every value is 32 digits: one decode
    uuids = pa.Array.from_buffers(pa.binary(16), len(values), [None, pa.py_buffer(raw)])
    fields = _prefixed(16, uuids.cast(pa.binary()))
    return pc.if_else(values.is_null(), pa.scalar(NULL_FIELD, pa.binary()), fields) if values.null_count else fields


def _numeric_fields(values: pa.Array) -> pa.Array | None:
    """numeric from decimal128(p ≤ 18, s ≥ 0): ndigits, weight, sign, dscale, then base-10000 digits. Every
    row gets the same number of digit groups (leading and trailing zero groups are fine: numeric_recv strips
    them), so the groups are column-wise integer divisions of the unscaled value, and every field has the same
    width: the fields are laid out int16 word by int16 word with strided array assignments."""
    precision, scale = values.type.precision, values.type.scale
    if precision > _MAX_DECIMAL_DIGITS or scale < 0:
        return None
    unscaled = _low_int64(values)
    if unscaled is None:
        raise _Unencodable("decimal value wider than its precision")
    unscaled = unscaled.fill_null(0)  # NULLs go back in at the end
    magnitude = pc.abs(unscaled)
    pad = -scale % 4  # decimal zeros after the last digit so that the fraction fills whole groups
    int_groups = -(-max(precision - scale, 0) // 4)
    groups_count = int_groups + (scale + pad) // 4
    last = 10 ** (4 - pad)  # the last group holds the value's last 4 - pad digits, then pad zeros
    groups = [pc.multiply(pc.remainder(magnitude, last), 10**pad)]
    rest = pc.divide(magnitude, last)
    for _ in range(groups_count - 1):
        groups.append(pc.remainder(rest, 10_000))
        rest = pc.divide(rest, 10_000)
    # int16 words of one field: int32 length (2 words), ndigits, weight, sign, dscale, the digits
    n, stride = len(values), 6 + len(groups)
    words = array.array("h", bytes(2 * stride * n))
    for at, constant in ((1, 2 * (stride - 2)), (2, groups_count), (3, int_groups - 1), (5, scale)):
        words[at::stride] = array.array("h", [constant]) * n
    words[4::stride] = _int16_words(pc.if_else(pc.less(unscaled, 0), 0x4000, 0).cast(pa.int16()))
    for at, group in enumerate(reversed(groups), start=6):
        words[at::stride] = _int16_words(group.cast(pa.int16()))
    if _SWAP:
        words.byteswap()
    fields = pa.Array.from_buffers(pa.binary(2 * stride), n, [None, pa.py_buffer(words)]).cast(pa.binary())
    if not values.null_count:
        return fields
    return pc.if_else(values.is_valid(), fields, pa.scalar(NULL_FIELD, pa.binary()))


def _int16_words(values: pa.Array) -> array.array[int]:
    words = array.array("h")
    words.frombytes(memoryview(values.buffers()[1])[values.offset * 2:(values.offset + len(values)) * 2])
    return words


def _variable_fields(payload: pa.Array) -> pa.Array:
    """Fields of a binary array: each value's length, then the value."""
    lengths = pc.binary_length(payload).cast(pa.int32())
    prefix = _big_endian(lengths, 4).cast(payload.type)
    return _with_nulls(_concat(prefix, payload))


# ------------------------------------------------------------ buffers


def _big_endian(values: pa.Array, width: int) -> pa.Array:
    """A fixed-width number array as fixed_size_binary(width) of its big-endian bytes (same nulls)."""
    validity, data = values.buffers()
    end = (values.offset + len(values)) * width
    swapped = array.array(_TYPECODES[width])
    if data is not None:
        swapped.frombytes(memoryview(data)[:end])
    if _SWAP:
        swapped.byteswap()
    return pa.Array.from_buffers(pa.binary(width), len(values), [validity, pa.py_buffer(swapped)],
                                 offset=values.offset)


def _low_int64(values: pa.Array) -> pa.Array | None:
    """A decimal128 array's unscaled values as int64: the low 8 of the 16 little-endian bytes, which hold the
    whole two's complement value when it has at most 18 digits. None when a value has more digits than the
    type's precision (Arrow does not check that on every path)."""
    validity, data = values.buffers()
    words = array.array("q")
    words.frombytes(memoryview(data)[:(values.offset + len(values)) * 16])
    low_words, high_words = (words[0::2], words[1::2]) if _SWAP else (words[1::2], words[0::2])
    low, high = (pa.Array.from_buffers(pa.int64(), len(values), [validity, pa.py_buffer(w)], offset=values.offset)
                 for w in (low_words, high_words))
    limit = 10**values.type.precision
    bounds = pc.min_max(low)
    if bounds["min"].is_valid and not (-limit < bounds["min"].as_py() and bounds["max"].as_py() < limit):
        return None
    sign_words = pc.if_else(pc.less(low, 0), -1, 0)  # the high word of a value that fits 64 bits
    return low if pc.all(pc.equal(high, sign_words)).as_py() is not False else None


def _prefixed(width: int, payload: pa.Array) -> pa.Array:
    return _concat(struct.pack("!i", width), payload)


def _concat(*parts: pa.Array | bytes) -> pa.Array:
    """Element-wise concatenation of binary arrays and constants (NULL where any array is NULL); large_binary
    when any array is."""
    arrays = [p for p in parts if isinstance(p, pa.Array)]
    kind = pa.large_binary() if any(pt.is_large_binary(a.type) for a in arrays) else pa.binary()
    args = [pa.scalar(p, kind) if isinstance(p, bytes) else p.cast(kind) for p in parts]
    return pc.binary_join_element_wise(*args, pa.scalar(b"", kind))


def _field(payload: bytes) -> pa.Scalar:
    return pa.scalar(struct.pack("!i", len(payload)) + payload, pa.binary())


def _with_nulls(fields: pa.Array) -> pa.Array:
    """NULL values (still Arrow nulls in ``fields``) as the NULL marker."""
    return fields.fill_null(pa.scalar(NULL_FIELD, fields.type)) if fields.null_count else fields


def _data_size(binary: pa.Array) -> int:
    start, end = _value_bounds(binary)
    return end - start


def _data(binary: pa.Array) -> memoryview:
    """The concatenated values of a binary or string array, without a copy."""
    start, end = _value_bounds(binary)
    data = binary.buffers()[2]
    return memoryview(b"") if data is None else memoryview(data)[start:end]


def _value_bounds(binary: pa.Array) -> tuple[int, int]:
    """Where a (sliced) binary or string array's values start and end in its data buffer."""
    width = 8 if pt.is_large_binary(binary.type) or pt.is_large_string(binary.type) else 4
    offsets = memoryview(binary.buffers()[1])
    first, last = binary.offset * width, (binary.offset + len(binary)) * width
    return (int.from_bytes(offsets[first:first + width], sys.byteorder, signed=True),
            int.from_bytes(offsets[last:last + width], sys.byteorder, signed=True))
