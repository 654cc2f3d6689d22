"""One thread that makes every destination call of an apply consumer, in the order they were asked for.

The consumer polls and decodes the next records while this thread writes the previous ones: the destination's
work (the server's, mostly: the thread waits on a socket with the GIL released) overlaps with Kafka and with
decoding. All calls go through this one thread, so a destination connection is never used by two threads at
once, and a read (a partition's stored offset) sees every write asked for before it.

After a write fails, later writes are skipped (they would land after a gap) and the failure is raised to the
consumer at its next call; the consumer then stops, and a new one starts from the offsets the destination
holds.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_Task = tuple[Callable[[], Any], "Future[Any]"]


class WriteBehind:
    def __init__(self, name: str = "apply-writer", depth: int = 1) -> None:
        """``depth``: writes that may wait while one runs (each holds a poll's worth of records)."""
        self._tasks: queue.Queue[_Task | None] = queue.Queue(maxsize=depth)
        self._failure: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            fn, future = task
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    def submit(self, write: Callable[[], None]) -> None:
        """Run ``write`` after everything asked for before; waits while ``depth`` writes are queued. Raises
        the failure of an earlier write instead."""
        self.raise_failure()

        def guarded() -> None:
            if self._failure is not None:
                return
            try:
                write()
            except BaseException as exc:
                self._failure = exc
                raise

        self._put(guarded)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the writer thread after everything asked for before, and its result (or exception)."""
        if threading.current_thread() is self._thread or self._closed:
            return fn()
        return self._put(fn).result()

    def drain(self) -> None:
        """Wait until every write asked for so far is done; raise the first failure."""
        self.call(lambda: None)
        self.raise_failure()

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """Finish what was asked for, then stop the thread (failures are left to ``raise_failure``)."""
        if self._closed:
            return
        self._closed = True
        self._tasks.put(None)
        self._thread.join()

    def _put(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._tasks.put((fn, future))
        return future
