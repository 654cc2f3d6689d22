"""prefetch (copyjob.snapshot.background): producers in background threads behind a bounded queue. No test
sleeps: producers report what they did through a condition, and the tests wait on it (with a deadline)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from copyjob.snapshot.background import prefetch

DEADLINE_S = 30.0


class Producers:
    """Producers that count what they produced and notice being closed, under one condition."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.produced = 0
        self.closed: set[int] = set()
        self.threads: set[str] = set()

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout=DEADLINE_S), f"timed out waiting for {what}"

    def make(self, n: int, count: int | None = None, fail_after: int | None = None) -> Callable[[], Iterator[str]]:
        """Producer ``n``: ``count`` items (endless when None), raising after ``fail_after`` items."""

        def produce() -> Iterator[str]:
            try:
                i = 0
                while count is None or i < count:
                    if fail_after is not None and i == fail_after:
                        raise ValueError(f"producer {n} failed")
                    with self.cond:
                        self.produced += 1
                        self.threads.add(threading.current_thread().name)
                        self.cond.notify_all()
                    yield f"{n}-{i}"
                    i += 1
            finally:
                with self.cond:
                    self.closed.add(n)
                    self.cond.notify_all()

        return produce


def test_every_item_of_every_producer_once() -> None:
    p = Producers()
    items = list(prefetch([p.make(n, count=50 * n) for n in range(4)], max_buffered=3))
    assert Counter(items) == Counter(f"{n}-{i}" for n in range(4) for i in range(50 * n))
    assert p.closed == {0, 1, 2, 3}
    assert p.threads <= {f"reader-{n}" for n in range(4)} and "MainThread" not in p.threads


def test_items_of_one_producer_keep_their_order() -> None:
    p = Producers()
    items = list(prefetch([p.make(0, count=100), p.make(1, count=100)], max_buffered=2))
    for n in (0, 1):
        assert [i for i in items if i.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(100)]


def test_no_producers_and_empty_producers_give_nothing() -> None:
    assert list(prefetch([], max_buffered=2)) == []
    p = Producers()
    assert list(prefetch([p.make(0, count=0), p.make(1, count=0)], max_buffered=0)) == []


@pytest.mark.parametrize(("producers", "max_buffered"), [(1, 1), (1, 2), (3, 4), (4, 5)])
def test_memory_is_bounded_while_the_consumer_waits(producers: int, max_buffered: int) -> None:
    """Endless producers run ahead of a paused consumer until the queue is full and each producer holds one
    item it cannot hand over: never more than ``max_buffered + producers`` items ahead."""
    p = Producers()
    stream = prefetch([p.make(n) for n in range(producers)], max_buffered=max_buffered)
    for consumed in range(1, 4):
        next(stream)
        bound = consumed + max_buffered + producers
        p.wait_for(lambda bound=bound: p.produced >= bound, "the producers to fill the queue")
        with p.cond:  # everyone is blocked now: nothing more is produced until the consumer takes an item
            assert p.produced == bound
    stream.close()  # closing early stops the producers
    p.wait_for(lambda: len(p.closed) == producers, "the producers to stop")


def test_a_producer_error_reaches_the_consumer_and_stops_the_others() -> None:
    p = Producers()
    stream = prefetch([p.make(0), p.make(1, fail_after=5), p.make(2)], max_buffered=2)
    received = []
    with pytest.raises(ValueError, match="producer 1 failed"):
        for item in stream:
            received.append(item)
    # one queue, first in first out: the failing producer's items all came before its error
    assert [i for i in received if i.startswith("1-")] == [f"1-{i}" for i in range(5)]
    p.wait_for(lambda: p.closed == {0, 1, 2}, "every producer to stop")


def test_an_error_before_the_first_item_reaches_the_consumer() -> None:
    def broken() -> Iterator[str]:
        raise KeyError("no table")
        yield "never"  # pragma: no cover

    with pytest.raises(KeyError, match="no table"):
        list(prefetch([broken], max_buffered=1))
