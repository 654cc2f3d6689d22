"""Byte-level building blocks for Avro over whole Arrow arrays, with pyarrow.compute only (no numpy: it is not a
dependency of copyjob, and pyarrow's kernels are enough).

The trick used for writing: a per-row byte string of at most 8 bytes is computed as a ``uint64`` whose
little-endian bytes are the string, and becomes an inline binary view of that length (:func:`from_packed`).
Reading goes the other way: the byte at ``position + k`` of every row, gathered with ``take`` over the whole
message buffer, and byte strings cut out of that buffer with one ``take`` of all their bytes (:func:`slices`).
(List views flattened would do the cutting too, but are ten times slower.)
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

U64 = pa.uint64()
I64 = pa.int64()
I32 = pa.int32()


def u64(value: int) -> pa.Scalar:
    """A uint64 scalar (pyarrow would infer int64 and refuse values ≥ 2**63)."""
    return pa.scalar(value, U64)


def arange(n: int, type: pa.DataType = I64) -> pa.Array:
    """0, 1, …, n-1."""
    if n == 0:
        return pa.array([], type)
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, type), n)), pa.scalar(1, type))


def zigzag(values: pa.Array) -> pa.Array:
    """Avro's zigzag mapping of signed integers (int64 array without nulls) to uint64."""
    sign = pc.if_else(pc.less(values, pa.scalar(0, I64)), pa.scalar(-1, I64), pa.scalar(0, I64))
    return pc.bit_wise_xor(pc.shift_left(values, pa.scalar(1, I64)), sign).view(U64)


def varint_length(zz: pa.Array, max_bytes: int = 10) -> pa.Array:
    """Bytes of the base-128 varint of each uint64 (1 … 10), as uint64."""
    length = pa.repeat(u64(1), len(zz))
    for j in range(1, max_bytes):
        ge = pc.greater_equal(zz, u64(1 << (7 * j)))
        if not pc.any(ge).as_py():
            break
        length = pc.add(length, pc.cast(ge, U64))
    return length


def varints(zz: pa.Array) -> pa.BinaryArray:
    """The base-128 varint (Avro's int/long encoding after zigzag) of each uint64, as a binary array."""
    length = varint_length(zz)
    longest = pc.max(length).as_py() or 1
    lo = _pack_groups(zz, length, 0, min(longest, 8))
    lo_len = pc.min_element_wise(length, u64(8))
    out = from_packed(lo, lo_len)
    if longest > 8:  # values ≥ 2**56: the 9th and 10th bytes go in a second word
        hi = _pack_groups(zz, length, 8, longest)
        hi_len = pc.subtract(pc.max_element_wise(length, u64(8)), u64(8))
        out = pc.binary_join_element_wise(out, from_packed(hi, hi_len), b"")
    return out


def _pack_groups(zz: pa.Array, length: pa.Array, first: int, last: int) -> pa.Array:
    """7-bit groups ``first`` … ``last``-1 of each value, continuation bits set, as little-endian bytes."""
    packed = pa.repeat(u64(0), len(zz))
    for k in range(first, last):
        group = pc.bit_wise_and(pc.shift_right(zz, u64(7 * k)), u64(0x7F))
        more = pc.if_else(pc.greater(length, u64(k + 1)), u64(0x80), u64(0))
        packed = pc.bit_wise_or(packed, pc.shift_left(pc.bit_wise_or(group, more), u64(8 * (k - first))))
    return packed


def from_packed(packed: pa.Array, lengths: pa.Array) -> pa.BinaryArray:
    """Per row, the first ``lengths[i]`` (≤ 8) little-endian bytes of the uint64 ``packed[i]``.

    Built as a binary *view* array whose values are all inline (a view is 16 bytes: the int32 length, then up
    to 12 bytes of data), so two uint64 words per row, interleaved with one ``take``; then cast to binary."""
    n = len(packed)
    first = pc.bit_wise_or(pc.cast(lengths, U64), pc.shift_left(packed, u64(32)))
    second = pc.shift_right(packed, u64(32))
    k = arange(2 * n)
    row = pc.shift_right(k, pa.scalar(1, I64))
    interleave = pc.add(row, pc.multiply(pc.bit_wise_and(k, pa.scalar(1, I64)), pa.scalar(n, I64)))
    words = pc.take(pa.concat_arrays([first, second]), interleave)
    views = pa.Array.from_buffers(pa.binary_view(), n, [None, words.buffers()[1]])
    return pc.cast(views, pa.binary())


def slices(data: pa.Array, starts: pa.Array, sizes: pa.Array) -> pa.BinaryArray:
    """Row i = ``data[starts[i] : starts[i] + sizes[i]]`` (uint8 ``data``, int64 starts and sizes).

    One ``take`` of every wanted byte: the byte j of the output belongs to row ``parent[j]`` (from a list
    array shaped by the sizes) and sits at ``starts[row] + j - offsets[row]`` in ``data``."""
    offsets = pa.concat_arrays([pa.array([0], I64), pc.cumulative_sum(sizes)])
    total = offsets[-1].as_py()
    if total >= 2**31:
        raise ValueError("more than 2 GiB of values in one batch")
    shape = pa.LargeListArray.from_arrays(offsets, pa.nulls(total, pa.null()))
    parent = pc.list_parent_indices(shape)
    shift = pc.subtract(pc.take(starts, parent), pc.take(offsets, parent))
    flat = pc.take(data, pc.add(arange(total), shift))
    small = pc.cast(offsets, I32)
    return pa.Array.from_buffers(pa.binary(), len(sizes), [None, small.buffers()[1], flat.buffers()[1]],
                                 offset=0)


def fixed_width(values: pa.Array, width: int) -> pa.BinaryArray:
    """The little-endian bytes of each value of a fixed-width primitive array (no nulls) as binary."""
    fixed = pa.Array.from_buffers(pa.binary(width), len(values), [None, values.buffers()[1]], offset=values.offset)
    return pc.cast(fixed, pa.binary())
