"""When a merge load first tries its rows as a plain COPY into the table.

Merging through a staging table (COPY into it, delete the target rows of its keys, insert the last row per
key) costs the server about twice a plain COPY. When the table has a unique index on the merge key, a batch
whose keys are all new can go straight in: the load COPYs it into the table inside a savepoint, and if any
key already exists (or repeats in the batch) the index refuses it at once, the savepoint is rolled back and
the batch is staged as before. Snapshots and inserts thus load at COPY speed; for a stream of updates every
attempt would fail, so after a refusal a table skips the attempt for 1, 2, 4 … up to 64 batches.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

MAX_SKIP = 64


@dataclass
class DirectInserts:
    """The attempt schedule of one destination table, shared by its loads (and their threads)."""

    _skip: int = 0
    _penalty: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def should_try(self) -> bool:
        with self._lock:
            if self._skip > 0:
                self._skip -= 1
                return False
            return True

    def refused(self) -> None:
        with self._lock:
            self._skip = self._penalty
            self._penalty = min(self._penalty * 2, MAX_SKIP)

    def accepted(self) -> None:
        with self._lock:
            self._penalty = 1
