"""The one retry policy: a step that fails with a retriable error (``copyjob.core.errors.is_retriable``: a
lost connection, a deadlock, a broker that is not there yet) is tried again, at most ``ATTEMPTS`` times in all,
waiting 2, 4, … seconds (at most 10) in between; a terminal error (a wrong password, a bad value) is raised at
once. Every path that retries (a table copy, a CDC batch, a Kafka capture) goes through :func:`retrying`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from copyjob.core.errors import error_text, is_retriable

T = TypeVar("T")
ATTEMPTS = 3
log = logging.getLogger("copyjob")


def retrying(step: Callable[[], T], label: str, *, attempts: int = ATTEMPTS,
             sleep: Callable[[float], None] | None = None) -> T:
    """``step()``, tried again on retriable errors; the last error is raised as it is."""

    def warn(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s: %s; retrying (%d/%d)", label, error_text(exc) if exc else "failed",
                    state.attempt_number, attempts)

    policy = Retrying(retry=retry_if_exception(is_retriable), stop=stop_after_attempt(attempts),
                      wait=wait_exponential(multiplier=2, max=10), before_sleep=warn, reraise=True,
                      sleep=sleep or time.sleep)
    return policy(step)
