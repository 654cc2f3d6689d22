"""The one commit order of copyjob. Every path that commits data goes through :meth:`Checkpoint.commit`:

1. **durable**: the sink makes the data durable together with its marker: a destination transaction that
   also writes the table's ``_copyjob_state`` row (or marker file), or a producer flush that returns once the
   broker acknowledged every message;
2. **save**: the position ledger saves the positions in the state store (``copyjob.offsets.ledger``);
3. **ack**: the capture acknowledges the source, which may then release what it kept (PostgreSQL confirms
   the flushed LSN; a Kafka consumer group commits its offsets; a polled source has nothing to release).

Why this order: a crash after 1 leaves the destination's marker newer than the store, and the next run takes
the marker (the marker is the truth). A crash after 2 leaves the source unacknowledged: it sends the changes
again and the sink skips what its marker says it holds. Nothing is lost and nothing is applied twice. The
crash points of the tests (``COPYJOB_FAULT``) sit between the steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from copyjob.core import faults

T = TypeVar("T")
Position = Mapping[str, Any]


@dataclass
class Checkpoint:
    """``save`` (step 2) and ``ack`` (step 3) of one capture → sink pair; either may be absent (a sink whose
    positions live only in its markers saves for ``status`` only, a polled source has nothing to ack)."""

    save: Callable[[], None] | None = None
    ack: Callable[[Position], None] | None = None
    after_durable: str = "destination-committed"
    """The crash point between steps 1 and 2."""

    def commit(self, durable: Callable[[], T], position: Position | None = None) -> T:
        """Steps 1–3 for what ``durable`` writes; returns what it returns. A failure in a step skips the
        steps after it."""
        result = durable()  # 1
        faults.passed(self.after_durable)
        if self.save is not None:  # 2
            self.save()
        if self.ack is not None and position is not None:  # 3
            self.ack(position)
        return result
