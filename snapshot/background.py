"""Running producers in background threads behind a bounded queue, so that reading overlaps writing and
memory stays bounded by the queue's size."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(producers: list[Callable[[], Iterable[T]]], max_buffered: int) -> Iterator[T]:
    """Items of every producer (each run in its own thread), at most ``max_buffered`` held at once.

    The first producer error is re-raised in the consumer; closing the iterator early stops the producers.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=max(1, max_buffered))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run(produce: Callable[[], Iterable[T]]) -> None:
        try:
            for item in produce():
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Failure(exc))
        finally:
            put(_DONE)

    threads = [threading.Thread(target=run, args=(p,), daemon=True, name=f"reader-{i}")
               for i, p in enumerate(producers)]
    for t in threads:
        t.start()
    remaining = len(threads)
    interrupted = False
    try:
        while remaining:
            item = buffer.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, _Failure):
                raise item.exc
            else:
                yield item  # type: ignore[misc]
    except (KeyboardInterrupt, SystemExit):
        interrupted = True  # Ctrl-C stops at once: a reader may sit in a long database call, and is a daemon
        raise
    finally:
        stop.set()
        if not interrupted:
            for t in threads:
                t.join(timeout=5)
