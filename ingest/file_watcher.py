"""Arrival of files in a folder, for ``triggers: - file_arrival: {path, pattern, debounce}``.

A :class:`FileWatcher` turns filesystem events into batches of arrived files:

1. a watchdog observer reports files created, written, or moved into the folder (native events: inotify,
   FSEvents, ReadDirectoryChangesW). Filesystems that send no events (network mounts, some container
   volumes) need ``poll=True``: watchdog's polling observer compares directory snapshots instead. When the
   native observer cannot start at all (no inotify instances left, an unsupported filesystem) the watcher
   falls back to polling by itself;
2. names matching ``pattern`` go to a :class:`Debouncer`, which releases them as one batch once no new event
   has come for ``debounce`` seconds, so a burst of files, or one file written in many chunks, makes one run.

Arrivals stay inside the folder: ``pattern`` is relative to it (the job file's check refuses ``..`` and
absolute patterns), and a file that is a symbolic link resolving outside the folder (or lies in a linked
folder that does) is no arrival: it is skipped with a warning, once per name, unless
``follow_symlinks_outside`` is set (the source's option of that name).

The watcher never calls back into a run: the caller asks :meth:`FileWatcher.take` for a ready batch and
:meth:`FileWatcher.due_in` how long to sleep; the ``on_event`` callback only wakes the caller up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler

log = logging.getLogger(__name__)

__all__ = ["Debouncer", "FileWatcher"]


class Debouncer:
    """Collects names and releases them together once ``quiet_s`` seconds passed without a new one."""

    def __init__(self, quiet_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if quiet_s < 0:
            raise ValueError("quiet_s must not be negative")
        self.quiet_s = quiet_s
        self._clock = clock
        self._lock = threading.Lock()
        self._names: dict[str, None] = {}  # ordered set: first arrival first
        self._last_event = 0.0

    def add(self, name: str) -> None:
        with self._lock:
            self._names[name] = None
            self._last_event = self._clock()

    def due_in(self) -> float | None:
        """Seconds until the pending batch is ready (0 when it is), or None when nothing is pending."""
        with self._lock:
            if not self._names:
                return None
            return max(0.0, self._last_event + self.quiet_s - self._clock())

    def take(self) -> list[str]:
        """The pending names when they have been quiet long enough (and forget them), else []."""
        with self._lock:
            if not self._names or self._clock() < self._last_event + self.quiet_s:
                return []
            names = list(self._names)
            self._names.clear()
            return names


class FileWatcher:
    """Watches ``folder`` for files matching ``pattern`` (a glob on the file name, or on the path relative to
    the folder when ``recursive``). Files already there when it starts are not arrivals."""

    def __init__(self, folder: Path, pattern: str = "*", *, recursive: bool = False, debounce_s: float = 2.0,
                 poll: bool = False, poll_interval_s: float = 1.0, follow_symlinks_outside: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = Path(folder).resolve()
        self.pattern = pattern
        self.recursive = recursive
        self.follow_symlinks_outside = follow_symlinks_outside
        self._warned: set[str] = set()
        self.poll = poll
        self.poll_interval_s = poll_interval_s
        self._on_event: Callable[[], None] | None = None
        self._debouncer = Debouncer(debounce_s, clock)
        self._observer: Any = None

    @property
    def polling(self) -> bool:
        """True when the watcher polls (asked to, or because the native observer could not start)."""
        return self.poll

    def start(self, on_event: Callable[[], None] | None = None) -> None:
        """Start watching; ``on_event`` is called (from the observer's thread) for every matching event.
        Raises FileNotFoundError when the folder does not exist."""
        self._on_event = on_event
        if not self.folder.is_dir():
            raise FileNotFoundError(f"not a folder: {self.folder}")
        if not self.poll:
            try:
                self._observer = self._start_observer(polling=False)
                return
            except (OSError, RuntimeError) as exc:
                log.warning("%s: cannot watch for file events (%s); polling every %gs instead",
                            self.folder, exc, self.poll_interval_s)
                self.poll = True
        self._observer = self._start_observer(polling=True)

    def _start_observer(self, *, polling: bool) -> Any:
        from watchdog.observers import Observer  # the platform's native observer
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=self.poll_interval_s) if polling else Observer()
        observer.schedule(_Handler(self._arrived), str(self.folder), recursive=self.recursive)
        observer.daemon = True  # a stuck filesystem call must not keep the process alive at exit
        try:
            observer.start()
        except BaseException:
            observer.stop()
            raise
        return observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def due_in(self) -> float | None:
        return self._debouncer.due_in()

    def take(self) -> list[Path]:
        """The files that arrived, once no new one came for the debounce time; else []."""
        return [Path(name) for name in self._debouncer.take()]

    def _arrived(self, path: str) -> None:
        full = Path(path)
        try:
            relative = full.relative_to(self.folder).as_posix()
        except ValueError:
            return  # moved out of the folder
        if "/" in relative and not self.recursive:
            return
        if not (fnmatch(full.name, self.pattern) or fnmatch(relative, self.pattern)):
            return
        if not self.follow_symlinks_outside and not self._inside(full):
            return
        self._debouncer.add(str(full))
        if self._on_event is not None:
            self._on_event()


    def _inside(self, full: Path) -> bool:
        """Whether ``full``, every link on its way resolved, is still in the folder; warns once per name
        when it is not."""
        real = os.path.realpath(full)
        folder = str(self.folder)
        if real == folder or real.startswith(folder.rstrip("/") + "/"):
            return True
        if str(full) not in self._warned:
            self._warned.add(str(full))
            log.warning("%s: skipped: a symbolic link to %s, outside the watched folder %s (set "
                        "follow_symlinks_outside: true on the source to follow it)", full, real, folder)
        return False


class _Handler(FileSystemEventHandler):
    """Created, written (modified or closed after writing) and moved-in files; never directories or
    deletions."""

    def __init__(self, arrived: Callable[[str], None]) -> None:
        super().__init__()
        self._arrived = arrived

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if event.event_type in ("created", "modified", "closed"):
            self._arrived(os.fsdecode(event.src_path))
        elif event.event_type == "moved" and event.dest_path:
            self._arrived(os.fsdecode(event.dest_path))
