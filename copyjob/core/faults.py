"""Crash points for tests: ``COPYJOB_FAULT=point:n`` makes the process SIGKILL itself (no cleanup, as a
crash would) the n-th time it passes ``point``.

Points of a table copy: ``batch-written`` (a batch is in the destination transaction, not committed) and
``destination-committed`` (data and marker committed, the state store not yet written). Points of change
capture: ``snapshot-batch`` (a snapshot batch read, not committed), ``applied`` (a batch committed in the
destination, its position not yet acknowledged to the source) and ``committed`` (Kafka: a chunk acknowledged
by the broker, its position not yet saved nor acknowledged). Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_remaining: dict[str, int] | None = None


def _armed() -> dict[str, int]:
    global _remaining
    if _remaining is None:
        point, _, n = os.environ.get("COPYJOB_FAULT", "").partition(":")
        _remaining = {point: int(n or 1)} if point else {}
    return _remaining


def passed(point: str) -> None:
    armed = _armed()
    left = armed.get(point, 0)
    if left > 0:
        armed[point] = left - 1
        if left == 1:
            os.kill(os.getpid(), signal.SIGKILL)
