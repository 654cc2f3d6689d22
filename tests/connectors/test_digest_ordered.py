"""connectors._digest_ordered: bucket hashes from a stream of Arrow batches in any order equal those of the same
rows in key order, or the stream is given up (None) and the caller reads the span part by part."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from copyjob.connectors._digest_ordered import bucket_hashes, gathered_bucket_hashes

WIDTH = 10


def batches(keys: list[int], size: int) -> list[pa.RecordBatch]:
    table = pa.table({"k": pa.array(keys, pa.int64()), "b": pa.array([k // WIDTH for k in keys], pa.int64()),
                      "t": pa.array([f"row {k}" for k in keys])})
    return table.to_batches(max_chunksize=size)


def counts(keys: list[int]) -> dict[int, int]:
    found: dict[int, int] = {}
    for k in keys:
        found[k // WIDTH] = found.get(k // WIDTH, 0) + 1
    return found


@pytest.mark.parametrize("size", [1, 7, 25, 1000])
def test_rows_in_runs_hash_as_rows_in_key_order(size: int) -> None:
    keys = [k for start in (50, 0, 150, 100, 200) for k in range(start, start + 50)]  # runs of 50, swapped
    want = bucket_hashes(pa.Table.from_batches(batches(sorted(keys), 1000)))
    assert gathered_bucket_hashes(batches(keys, size), counts(keys), held_rows=100) == want


def test_a_stream_further_out_of_order_than_it_may_hold_is_given_up() -> None:
    keys = list(range(500))
    random.Random(3).shuffle(keys)
    assert gathered_bucket_hashes(batches(keys, 20), counts(keys), held_rows=100) is None
    assert gathered_bucket_hashes(batches(keys, 20), counts(keys), held_rows=500) == bucket_hashes(
        pa.Table.from_batches(batches(sorted(keys), 1000)))


def test_rows_a_writer_added_after_the_count_give_the_stream_up() -> None:
    keys = list(range(100))
    fewer = counts(keys[:-1])  # counted before key 99 was written
    assert gathered_bucket_hashes(batches(keys, 30), fewer) is None


def test_a_bucket_short_of_its_count_is_hashed_with_the_rows_that_came() -> None:
    keys = [k for k in range(100) if k != 42]  # deleted after the count
    got = gathered_bucket_hashes(batches(keys, 30), counts(list(range(100))))
    assert got == bucket_hashes(pa.Table.from_batches(batches(keys, 1000)))
