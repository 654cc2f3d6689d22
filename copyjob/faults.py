"""Crash points for tests: ``COPYJOB_FAULT=point:n`` makes the process SIGKILL itself (no cleanup, as a
crash would) the n-th time it passes ``point``. Points of the table copy: ``batch-written`` (a batch is in
the destination transaction, not committed) and ``destination-committed`` (data and marker committed, the
state store not yet written). Unset, it costs one dictionary lookup per point."""

from __future__ import annotations

import os
import signal

_remaining: dict[str, int] = {}


def _armed() -> dict[str, int]:
    if not _remaining:
        point, _, n = os.environ.get("COPYJOB_FAULT", "").partition(":")
        _remaining[point] = int(n or 1) if point else 0
    return _remaining


def passed(point: str) -> None:
    armed = _armed()
    left = armed.get(point, 0)
    if left > 0:
        armed[point] = left - 1
        if left == 1:
            os.kill(os.getpid(), signal.SIGKILL)
