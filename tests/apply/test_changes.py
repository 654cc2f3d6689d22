"""Folding change events per key: the last change wins, deletes stay deletes, truncates reset."""

from __future__ import annotations

import pyarrow as pa
import pytest
from copyjob.apply.changes import append_rows, fold, inserts_as_target, rows_to_batch, split_unchanged

from copyjob.core.changes import UNCHANGED_TOAST, ChangeEvent, ColumnarInserts
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema


def c(i: int, v: str) -> ChangeEvent:
    return ChangeEvent("c", None, {"id": i, "v": v})


def u(i: int, v: object) -> ChangeEvent:
    return ChangeEvent("u", {"id": i}, {"id": i, "v": v})


def d(i: int) -> ChangeEvent:
    return ChangeEvent("d", {"id": i, "v": None}, None)


def test_last_change_per_key_wins() -> None:
    folded = fold([c(1, "a"), u(1, "b"), c(2, "x"), d(2), c(3, "y"), d(1), c(1, "again")], ["id"])
    assert folded.upserts == [{"id": 3, "v": "y"}, {"id": 1, "v": "again"}]
    assert folded.deletes == [{"id": 2}]
    assert not folded.truncate


def test_truncate_forgets_what_came_before() -> None:
    folded = fold([c(1, "a"), ChangeEvent("t", None, None), c(2, "b")], ["id"])
    assert folded.truncate and folded.upserts == [{"id": 2, "v": "b"}] and folded.deletes == []


def test_unchanged_toast_filled_from_an_earlier_image_in_the_batch() -> None:
    folded = fold([c(1, "big"), u(1, UNCHANGED_TOAST)], ["id"])
    assert folded.upserts == [{"id": 1, "v": "big"}]


def test_unchanged_toast_without_earlier_image_is_written_column_wise() -> None:
    folded = fold([u(1, UNCHANGED_TOAST), c(2, "x")], ["id"])
    whole, partial = split_unchanged(folded.upserts)
    assert whole == [{"id": 2, "v": "x"}]
    assert partial == {("id",): [{"id": 1}]}


def test_append_rows_carry_operation_position_and_time() -> None:
    e = ChangeEvent("d", {"id": 5, "v": "gone"}, None, position={"lsn": 42}, ts_ms=1_700_000_000_000)
    (row,) = list(append_rows([e]))
    assert row["_op"] == "d" and row["id"] == 5 and row["_position"] == '{"lsn": 42}'
    assert row["_commit_ts"].year == 2023


SOURCE = TableSchema(TableName("t"), (Column("id", LogicalType("int64")), Column("v", LogicalType("string")),
                                      Column("at", LogicalType("timestamptz"))), ("id",))


def inserts(ids: list[int | None]) -> ColumnarInserts:
    rows = pa.RecordBatch.from_pylist([{"id": i, "v": f"v{i}", "at": None} for i in ids], SOURCE.arrow_schema())
    return ColumnarInserts(rows, {"lsn": [1] * len(ids), "seq": list(range(len(ids)))}, [0] * len(ids))


@pytest.mark.parametrize(("target", "rename"), [
    (SOURCE, {}),
    (TableSchema(TableName("t"), (Column("key", LogicalType("int64")), Column("v", LogicalType("string")),
                                  Column("extra", LogicalType("int32"))), ("key",)), {"id": "key"}),
])
def test_inserts_held_column_wise_are_the_upserts_a_fold_makes(target: TableSchema, rename: dict[str, str]) -> None:
    run = inserts([3, 1, 2])
    got = inserts_as_target(run, target, rename, target.primary_key)
    assert got is not None
    assert got.equals(rows_to_batch(fold(run.events(), ["id"]).upserts, target, rename))


def test_inserts_that_a_fold_would_change_are_left_to_it() -> None:
    assert inserts_as_target(inserts([1, 2, 1]), SOURCE, {}, ("id",)) is None  # a key twice: the last wins
    assert inserts_as_target(inserts([None, None]), SOURCE, {}, ("id",)) is None  # NULL keys fold into one
    wider = TableSchema(TableName("t"), (Column("id", LogicalType("decimal", precision=20, scale=0)),), ("id",))
    assert inserts_as_target(inserts([1]), wider, {}, ("id",)) is None  # another Arrow type: Python converts
    assert inserts_as_target(inserts([1]), SOURCE, {}, ()) is None  # no key
