"""File arrival: debouncing, native events, polling, and the fallback to polling."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from copyjob.ingest.file_watcher import Debouncer, FileWatcher


def wait_for_batch(watcher: FileWatcher, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = watcher.take()
        if batch:
            return sorted(p.name for p in batch)
        time.sleep(0.05)
    return []


@pytest.fixture
def make_watcher(tmp_path: Path) -> Iterator[Callable[..., FileWatcher]]:
    started: list[FileWatcher] = []

    def make(**kwargs: object) -> FileWatcher:
        watcher = FileWatcher(tmp_path, debounce_s=0.2, poll_interval_s=0.1, **kwargs)  # type: ignore[arg-type]
        watcher.start()
        started.append(watcher)
        return watcher

    yield make
    for watcher in started:
        watcher.stop()


def test_debouncer_waits_for_quiet_then_releases_one_batch() -> None:
    now = [0.0]
    d = Debouncer(2.0, clock=lambda: now[0])
    assert d.due_in() is None and d.take() == []
    d.add("a.csv")
    now[0] = 1.5
    d.add("b.csv")
    d.add("a.csv")  # written again: still one name
    now[0] = 3.0
    assert d.take() == [] and d.due_in() == pytest.approx(0.5)
    now[0] = 3.5
    assert d.take() == ["a.csv", "b.csv"]
    assert d.due_in() is None and d.take() == []


@pytest.mark.parametrize("poll", [False, True], ids=["events", "polling"])
def test_new_matching_files_arrive_as_one_batch(tmp_path: Path, make_watcher: Callable[..., FileWatcher],
                                                poll: bool) -> None:
    (tmp_path / "old.csv").write_text("there before\n")
    (tmp_path / "sub").mkdir()
    watcher = make_watcher(pattern="*.csv", poll=poll)
    assert watcher.polling is poll
    (tmp_path / "a.csv").write_text("1\n")
    (tmp_path / "b.csv").write_text("2\n")
    (tmp_path / "notes.txt").write_text("not matching\n")
    (tmp_path / "sub" / "deep.csv").write_text("not recursive\n")
    assert wait_for_batch(watcher) == ["a.csv", "b.csv"]
    time.sleep(0.5)
    assert watcher.take() == []


def test_a_file_renamed_into_place_arrives_under_its_final_name(
        tmp_path: Path, make_watcher: Callable[..., FileWatcher]) -> None:
    watcher = make_watcher(pattern="*.csv")
    (tmp_path / ".upload.tmp").write_text("1\n")
    (tmp_path / ".upload.tmp").rename(tmp_path / "done.csv")
    assert wait_for_batch(watcher) == ["done.csv"]


def test_recursive_matches_subfolders(tmp_path: Path, make_watcher: Callable[..., FileWatcher]) -> None:
    (tmp_path / "2026").mkdir()
    watcher = make_watcher(pattern="*.csv", recursive=True)
    (tmp_path / "2026" / "x.csv").write_text("1\n")
    assert wait_for_batch(watcher) == ["x.csv"]


def test_falls_back_to_polling_when_events_cannot_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       make_watcher: Callable[..., FileWatcher]) -> None:
    import watchdog.observers

    class Broken:
        def __init__(self) -> None:
            raise OSError(24, "inotify instance limit reached")

    monkeypatch.setattr(watchdog.observers, "Observer", Broken)
    watcher = make_watcher(pattern="*.csv")
    assert watcher.polling
    (tmp_path / "late.csv").write_text("1\n")
    assert wait_for_batch(watcher) == ["late.csv"]


@pytest.mark.parametrize("poll", [False, True], ids=["events", "polling"])
def test_links_leading_outside_the_folder_are_no_arrivals(tmp_path: Path, poll: bool,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    outside = tmp_path / "outside"
    (outside / "d").mkdir(parents=True)
    (outside / "s.csv").write_text("secret\n")
    (outside / "d" / "x.csv").write_text("secret\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data").mkdir()
    (tmp_path / "in" / "data" / "c.csv").write_text("1\n")
    started = []
    try:
        for follow in (False, True):
            folder = tmp_path / "in"
            watcher = FileWatcher(folder, "*.csv", recursive=True, debounce_s=0.2, poll=poll, poll_interval_s=0.1,
                                  follow_symlinks_outside=follow)
            watcher.start()
            started.append(watcher)
            suffix = "2" if follow else ""
            with caplog.at_level("WARNING"):
                (folder / f"link{suffix}.csv").symlink_to(outside / "s.csv")
                (folder / f"linkdir{suffix}").symlink_to(outside / "d")
                (folder / f"inside{suffix}.csv").symlink_to(folder / "data" / "c.csv")
                (folder / f"plain{suffix}.csv").write_text("1\n")
                batch = wait_for_batch(watcher)
                time.sleep(0.5)
                batch += sorted(p.name for p in watcher.take())
            if follow:
                assert "link2.csv" in batch and "inside2.csv" in batch and "plain2.csv" in batch
            else:
                assert batch == ["inside.csv", "plain.csv"]
                assert "link.csv: skipped: a symbolic link to" in caplog.text
            watcher.stop()
    finally:
        for watcher in started:
            watcher.stop()


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileWatcher(tmp_path / "nope").start()


def test_ingest_does_not_import_the_other_stages() -> None:
    code = ("import sys, ingest.file_watcher; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'apply', 'snapshot', 'connectors'}); print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
