"""The apply side's writer thread: order, results, failures, and finishing on close."""

from __future__ import annotations

import threading
import time

import pytest
from copyjob.apply.write_behind import WriteBehind


def test_writes_run_in_order_on_one_thread_and_calls_see_them() -> None:
    writer = WriteBehind()
    seen: list[tuple[int, str]] = []
    for i in range(20):
        writer.submit(lambda i=i: (time.sleep(0.001), seen.append((i, threading.current_thread().name))))
    assert writer.call(lambda: len(seen)) == 20  # a call runs after everything asked for before it
    assert [i for i, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"apply-writer"}
    writer.close()


def test_a_failed_write_skips_the_later_ones_and_is_raised() -> None:
    writer = WriteBehind()
    done: list[int] = []
    writer.submit(lambda: done.append(1))
    writer.submit(lambda: 1 / 0)  # type: ignore[func-returns-value]
    writer.submit(lambda: done.append(3))  # never applied: it would land after a gap
    with pytest.raises(ZeroDivisionError):
        writer.drain()
    with pytest.raises(ZeroDivisionError):
        writer.submit(lambda: done.append(4))
    assert writer.call(lambda: "reads still work") == "reads still work"
    assert done == [1]
    writer.close()


def test_a_call_raises_its_own_error_without_failing_the_writer() -> None:
    writer = WriteBehind()
    with pytest.raises(KeyError):
        writer.call(lambda: {}["missing"])
    writer.submit(lambda: None)
    writer.drain()
    writer.close()


def test_close_finishes_what_was_asked_for() -> None:
    writer = WriteBehind()
    done: list[int] = []
    for i in range(3):
        writer.submit(lambda i=i: (time.sleep(0.05), done.append(i)))
    writer.close()
    assert done == [0, 1, 2]
    assert writer.call(lambda: "after close, in the caller's thread") == "after close, in the caller's thread"
