"""The key of a job's state: the job's name and its destination's identity.

The state store keys every row (table states, runs, the run lock, small values) by this scope, so one job
file deployed to two destinations keeps two states that never mix; the destination's marker stays the truth
about what it holds."""

from __future__ import annotations

import hashlib

SEPARATOR = "@"
MAX_LENGTH = 255
"""The store's job column holds at most this many characters."""


def state_scope(job: str, destination: str) -> str:
    """``job@destination``; a destination too long for the store is shortened with a hash of the whole."""
    scope = f"{job}{SEPARATOR}{destination}"
    if len(scope) <= MAX_LENGTH:
        return scope
    digest = hashlib.sha256(destination.encode()).hexdigest()[:16]
    return f"{job}{SEPARATOR}{destination[: MAX_LENGTH - len(job) - 19]}…{digest}"


def split_scope(scope: str) -> tuple[str, str | None]:
    """``(job, destination)`` of a scope; a job name alone (a store written before scopes) has no destination.
    Job names cannot hold ``@`` (the job file's check), so the first one separates."""
    job, sep, destination = scope.partition(SEPARATOR)
    return job, (destination if sep else None)
