"""The one retry policy: a step that fails with a retriable error (``copyjob.core.errors.is_retriable``: a
lost connection, a deadlock, a broker that is not there yet) is tried again, waiting 2, 4, … seconds (at most
10) in between; a terminal error (a wrong password, a bad value) is raised at once. Every path that retries (a
table copy, a CDC batch, a Kafka capture, a Kafka admin call) goes through :func:`retrying`.

:func:`on_conflict` is the one exception: a transaction the server rolled back against another one (a
deadlock between two apply members) is tried again at once, a few times, without the waits.

Two bounds: a number of attempts (``ATTEMPTS`` in all: a table copy, an admin call), or an outage
(:class:`Outage`: a stream that waits for its source or destination to come back, trying again until the
outage has lasted ``max_outage_s``, or forever when that is None). An outage logs one line per attempt with the
reason, tells ``waiting`` when it starts and at every attempt (``copyjob status`` shows it), and when it gives
up raises :class:`OutageTooLong`, which names the ``copy.max_outage`` setting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from copyjob.core.errors import ConnectionFailed, TransactionConflict, error_text, is_retriable

T = TypeVar("T")
ATTEMPTS = 3
RUN_MAX_OUTAGE_S = 300.0
"""How long ``copyjob run`` waits for a source or destination that went away (``copy.max_outage`` overrides
it); ``copyjob stream`` waits forever by default."""
log = logging.getLogger("copyjob")


class OutageTooLong(ConnectionFailed):
    """A source or destination stayed unreachable longer than ``copy.max_outage``."""

    retriable = False


@dataclass
class Outage:
    """A stream waiting for one side (``source`` or ``destination``) to come back.

    ``waiting(side, since, error)`` is called when the outage starts and at every failed attempt (with the
    latest error), ``waiting(side, None, None)`` once it is over; ``stop`` (SIGTERM) ends the wait with an
    InterruptedError."""

    side: str
    max_outage_s: float | None
    waiting: Callable[[str, datetime | None, str | None], None] | None = None
    stop: threading.Event | None = None
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0

    def failed(self, exc: BaseException) -> None:
        """One failed attempt: log it with its reason and tell ``waiting``."""
        self.attempts += 1
        text = error_text(exc)
        limit = "never gives up" if self.max_outage_s is None else f"max_outage {_duration(self.max_outage_s)}"
        log.warning("waiting for %s (attempt %d, %s so far, %s): %s", self.side, self.attempts,
                    _duration(time.monotonic() - self.started), limit, text)
        if self.waiting is not None:
            self.waiting(self.side, self.since, text)

    def over(self) -> None:
        """The step succeeded: when it had failed before, log that the side is back and tell ``waiting``."""
        if not self.attempts:
            return
        log.warning("%s is back after %s (%d attempts)", self.side, _duration(time.monotonic() - self.started),
                    self.attempts)
        if self.waiting is not None:
            self.waiting(self.side, None, None)

    def too_long(self, exc: BaseException) -> OutageTooLong:
        assert self.max_outage_s is not None
        return OutageTooLong(f"gave up waiting for the {self.side} after {_duration(time.monotonic() - self.started)}"
                             f" (copy.max_outage is {_duration(self.max_outage_s)}): {error_text(exc)}")


class _OutageLasted(stop_base):
    def __init__(self, outage: Outage) -> None:
        self._outage = outage

    def __call__(self, retry_state: RetryCallState) -> bool:
        limit = self._outage.max_outage_s
        return limit is not None and time.monotonic() - self._outage.started >= limit


class _Stopped(stop_base):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._event.is_set()


def retrying(step: Callable[[], T], label: str, *, attempts: int = ATTEMPTS,
             sleep: Callable[[float], None] | None = None, outage: Outage | None = None) -> T:
    """``step()``, tried again on retriable errors; the last error is raised as it is. With ``outage`` the
    bound is the outage's length instead of ``attempts`` (:class:`OutageTooLong` when it is exceeded,
    InterruptedError when ``outage.stop`` is set while waiting)."""

    def warn(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if outage is not None:
            outage.failed(exc if exc is not None else RuntimeError("failed"))
            return
        log.warning("%s: %s; retrying (%d/%d)", label, error_text(exc) if exc else "failed",
                    state.attempt_number, attempts)

    stop: stop_base = stop_after_attempt(attempts)
    pause: Callable[[float], None] = sleep or time.sleep
    if outage is not None:
        stop = _OutageLasted(outage)
        if outage.stop is not None:
            stop = stop_any(stop, _Stopped(outage.stop))
            if sleep is None:
                pause = _interruptible(outage.stop)
    policy = Retrying(retry=retry_if_exception(is_retriable), stop=stop,
                      wait=wait_exponential(multiplier=2, max=10), before_sleep=warn, reraise=True, sleep=pause)
    if outage is None:
        return policy(step)
    try:
        result = policy(step)
    except Exception as exc:
        if outage.stop is not None and outage.stop.is_set() and is_retriable(exc):
            raise InterruptedError(f"stopped while waiting for the {outage.side}") from exc
        if is_retriable(exc) and outage.max_outage_s is not None:
            raise outage.too_long(exc) from exc
        raise
    outage.over()
    return result


CONFLICT_ATTEMPTS = 5


def on_conflict(step: Callable[[], T], label: str, *, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """``step()`` (one destination transaction), tried again at once (after 50-500 ms, at random, so two
    writers do not meet again in step) when the server rolled it back against another transaction
    (:class:`TransactionConflict`); any other error, and the last conflict, raised as they are. A lost
    connection is not tried here: the caller's outage handling opens a new one."""

    def warn(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.info("%s: %s; trying the transaction again (%d/%d)", label, error_text(exc) if exc else "conflict",
                 state.attempt_number, attempts)

    policy = Retrying(retry=retry_if_exception_type(TransactionConflict), stop=stop_after_attempt(attempts),
                      wait=wait_random(0.05, 0.5), before_sleep=warn, reraise=True)
    return policy(step)


def _interruptible(event: threading.Event) -> Callable[[float], None]:
    def pause(seconds: float) -> None:  # SIGTERM ends the wait at once
        event.wait(seconds)

    return pause


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
