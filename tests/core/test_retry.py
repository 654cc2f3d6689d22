"""The retry policy bounded by an outage (copyjob.core.retry.Outage): a stream waits for its source or
destination, says so at every attempt, gives up only past max_outage, and stops waiting on SIGTERM."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest

from copyjob.core.errors import AuthenticationFailed, ConnectionFailed
from copyjob.core.retry import Outage, OutageTooLong, retrying


def test_waits_as_long_as_it_takes_and_reports_each_attempt() -> None:
    calls: list[tuple[str, datetime | None, str | None]] = []
    sleeps: list[float] = []
    left = [6]

    def down_for_a_while() -> str:
        left[0] -= 1
        if left[0]:
            raise ConnectionFailed(f"postgresql://u:secret@db/x is down ({left[0]} left)")
        return "back"

    outage = Outage("source", None, waiting=lambda *a: calls.append(a))
    assert retrying(down_for_a_while, "source", outage=outage, sleep=sleeps.append) == "back"
    assert sleeps == [2, 4, 8, 10, 10]  # capped exponential backoff
    assert [c[0] for c in calls] == ["source"] * 6
    assert all(c[1] == outage.since and c[2] and "secret" not in c[2] for c in calls[:5])  # redacted
    assert calls[-1] == ("source", None, None)  # over


def test_gives_up_past_max_outage_naming_the_setting() -> None:
    def down() -> None:
        raise ConnectionFailed("connection refused")

    with pytest.raises(OutageTooLong, match=r"copy.max_outage is 0s\): connection refused") as caught:
        retrying(down, "destination", outage=Outage("destination", 0.0), sleep=lambda s: None)
    assert not caught.value.retriable


def test_terminal_errors_fail_at_once_and_sigterm_ends_the_wait() -> None:
    def denied() -> None:
        raise AuthenticationFailed("wrong password")

    with pytest.raises(AuthenticationFailed):
        retrying(denied, "source", outage=Outage("source", None), sleep=lambda s: None)

    stop = threading.Event()

    def down() -> None:
        stop.set()  # SIGTERM arrives while the source is down
        raise ConnectionFailed("down")

    with pytest.raises(InterruptedError):
        retrying(down, "source", outage=Outage("source", None, stop=stop))


def test_a_transaction_rolled_back_against_another_is_tried_again_and_nothing_else_is() -> None:
    from copyjob.core.errors import TransactionConflict
    from copyjob.core.retry import on_conflict

    tries = [0]

    def deadlocked_twice() -> str:
        tries[0] += 1
        if tries[0] <= 2:
            raise TransactionConflict("Deadlock found when trying to get lock; try restarting transaction")
        return "committed"

    assert on_conflict(deadlocked_twice, "items") == "committed" and tries[0] == 3

    lost = [0]

    def connection_lost() -> None:
        lost[0] += 1
        raise ConnectionFailed("server closed the connection")  # the caller's outage handling reopens

    with pytest.raises(ConnectionFailed):
        on_conflict(connection_lost, "items")
    assert lost[0] == 1

    def always() -> None:
        raise TransactionConflict("deadlock")

    with pytest.raises(TransactionConflict):
        on_conflict(always, "items", attempts=2)
