"""Folding change events per key: the last change wins, deletes stay deletes, truncates reset."""

from __future__ import annotations

from copyjob.apply.changes import append_rows, fold, split_unchanged

from copyjob.core.changes import UNCHANGED_TOAST, ChangeEvent


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
