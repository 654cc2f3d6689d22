"""The file-set planner: which files a run copies, the mark after each one, quarantine. Pure logic."""

from __future__ import annotations

from copyjob.ingest.files import (
    FileMark,
    after_copy,
    after_failure,
    files_to_copy,
    finish_pass,
    forget_vanished,
    start_pass,
)

from copyjob.core.contracts import FileInfo

S = 1_000_000_000  # one second in nanoseconds


def f(path: str, second: int, size: int = 10, ns: int = 0) -> FileInfo:
    return FileInfo(path=path, mtime_ns=second * S + ns, size=size)


def copy_all(mark: FileMark, files: list[FileInfo]) -> FileMark:
    for file in files:
        mark = after_copy(mark, file)
    return mark


def test_first_pass_takes_every_file_oldest_first_then_path() -> None:
    listed = [f("b.csv", 2), f("a.csv", 2), f("c.csv", 1)]
    assert [x.path for x in files_to_copy(listed, FileMark())] == ["c.csv", "a.csv", "b.csv"]


def test_only_files_past_the_mark_and_nanoseconds_count() -> None:
    old = [f("a.csv", 1), f("b.csv", 2)]
    mark = copy_all(FileMark(), old)
    assert mark.mtime_ns == 2 * S and mark.names == {"b.csv"}
    later = [*old, f("c.csv", 2, ns=1), f("d.csv", 3)]
    assert [x.path for x in files_to_copy(later, mark)] == ["c.csv", "d.csv"]


def test_a_file_with_the_marks_timestamp_is_tracked_by_name() -> None:
    mark = copy_all(FileMark(), [f("a.csv", 5), f("b.csv", 5)])
    assert mark.names == {"a.csv", "b.csv"}
    listed = [f("a.csv", 5), f("b.csv", 5), f("c.csv", 5)]
    todo = files_to_copy(listed, mark)
    assert [x.path for x in todo] == ["c.csv"]
    mark = copy_all(mark, todo)
    assert files_to_copy(listed, mark) == []  # nothing is copied twice
    assert mark.names == {"a.csv", "b.csv", "c.csv"}


def test_a_rewritten_file_is_copied_again() -> None:
    mark = copy_all(FileMark(), [f("a.csv", 1), f("b.csv", 2)])
    assert [x.path for x in files_to_copy([f("a.csv", 7), f("b.csv", 2)], mark)] == ["a.csv"]


def test_a_bad_file_is_passed_remembered_and_retried_only_once_changed() -> None:
    mark = after_failure(FileMark(), f("bad.csv", 3, size=10), "bad.csv:2: expected 3 fields, got 4")
    mark = after_copy(mark, f("good.csv", 4))
    assert mark.mtime_ns == 4 * S
    assert mark.quarantined["bad.csv"].error.startswith("bad.csv:2:")
    unchanged = [f("bad.csv", 3, size=10), f("good.csv", 4)]
    assert files_to_copy(unchanged, mark) == []
    fixed_same_time = [f("bad.csv", 3, size=12), f("good.csv", 4)]  # e.g. restored with cp -p
    assert [x.path for x in files_to_copy(fixed_same_time, mark)] == ["bad.csv"]
    fixed = after_copy(mark, f("bad.csv", 3, size=12))
    assert fixed.quarantined == {} and fixed.mtime_ns == 4 * S  # an older file does not move the mark back


def test_vanished_quarantined_files_are_forgotten() -> None:
    mark = after_failure(FileMark(), f("gone.csv", 1), "gone.csv: broken")
    assert forget_vanished(mark, []).quarantined == {}
    assert forget_vanished(mark, [f("gone.csv", 1)]) is mark


def test_a_pass_is_incomplete_until_finished_and_fresh_passes_start_empty() -> None:
    previous = copy_all(FileMark(), [f("a.csv", 1)])
    resumed = start_pass(previous, fresh=False)
    assert not resumed.complete and resumed.mtime_ns == previous.mtime_ns
    fresh = start_pass(previous, fresh=True)
    assert fresh.mtime_ns is None and not fresh.complete
    assert finish_pass(fresh).complete


def test_json_round_trip() -> None:
    mark = after_failure(copy_all(FileMark(), [f("a.csv", 1), f("b.csv", 1)]), f("c.csv", 1, ns=5), "c.csv: x")
    mark = start_pass(mark, fresh=False)
    again = FileMark.from_json(mark.to_json())
    assert again == mark
    assert again.watermark is not None and again.watermark.year == 1970
    assert FileMark.from_json(None) == FileMark()
