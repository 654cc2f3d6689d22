"""Log-based change capture as the orchestrator (``copyjob.cdc``) sees it: a source with a change log
(:class:`LogSource`), opened with :class:`CaptureOptions`.

The implementations live in ``ingest/`` beside their protocol code (PostgreSQL:
``copyjob.ingest.postgres_cdc.capture``; MySQL/MariaDB: ``copyjob.ingest.mysql_cdc.capture``) and are looked up
by URL scheme in ``copyjob.ingest.LOG_SOURCES``. The application builds the options from the job file's
``cdc:`` block (``copyjob.jobfile.CdcSettings.as_capture_options``); a capture never reads the job file.

Positions are plain mappings whose keys only their source knows (PostgreSQL ``{"lsn", "seq"}``, MySQL a binlog
file and offset or a GTID set): the orchestrator orders them with :meth:`LogSource.at_or_before` and shows them
with :meth:`LogSource.describe`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from copyjob.core.contracts import ChangeCapture, SnapshotResult
    from copyjob.core.plan import TablePlan
    from copyjob.core.schema import TableName


@dataclass(frozen=True)
class CaptureOptions:
    """How a log source captures changes. Names left None get defaults derived from the name the caller
    passes along with these options (replication slot and publication ``copyjob_<name>``, MySQL server id
    from a hash of the name)."""

    slot: str | None = None
    """PostgreSQL: the replication slot."""
    publication: str | None = None
    """PostgreSQL: the publication."""
    publication_create: bool = True
    """PostgreSQL: create the publication, or add the tables to it, when needed (else only check it)."""
    server_id: int | None = None
    """MySQL/MariaDB: the replica server id the binlog is read as."""
    batch_events: int = 10_000
    """The most changes in one batch."""
    max_batch_delay_s: float = 0.2
    """How long a batch may wait for more changes before it is handed out."""
    heartbeat_s: float = 10.0
    """PostgreSQL: how often the position is reported to the server while nothing arrives."""
    columnar_inserts: bool = False
    """Hand a table's inserts out as :class:`~copyjob.core.changes.ColumnarInserts` where the source can (set
    from the sink's ``takes_columns``, not from the job file)."""

    def __post_init__(self) -> None:
        if self.batch_events < 1:
            raise ValueError(f"batch_events must be at least 1, not {self.batch_events}")
        if self.server_id is not None and self.server_id < 1:
            raise ValueError(f"server_id must be at least 1, not {self.server_id}")
        for name in ("max_batch_delay_s", "heartbeat_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")


class LogSource(Protocol):
    """A source with a change log, as the orchestrator uses it. Every implementation provides every member;
    where a source has nothing to do, the member says so (MySQL: ``stream_exists`` is always true,
    ``consumed_past`` always empty)."""

    where: str
    """The source, for messages (its redacted URL)."""
    parallel_snapshot: bool
    """Snapshot readers may run in parallel (every clone of the snapshot's source reads the same snapshot)."""

    def check(self, plans: Sequence[TablePlan]) -> list[str]:
        """Every unmet need of capturing ``plans`` (settings, privileges, tables), each a line that says what to
        do; creates nothing. ``prepare`` and ``copyjob validate --connect`` both call it."""

    def prepare(self, plans: Sequence[TablePlan]) -> None:
        """:meth:`check` (raising ConfigurationError with every problem), then make the log cover the tables
        (PostgreSQL: the publication); nothing is created when a check fails."""

    def stream_exists(self) -> bool:
        """Whether the job's change stream exists (PostgreSQL: its replication slot; a gone stream means every
        table is snapshotted again)."""

    def snapshot(self, copy: Callable[..., int]) -> SnapshotResult:
        """A consistent snapshot: calls ``copy(source)`` or ``copy(source, position)`` with a source whose
        reads see the snapshot; the result carries the position where streaming starts."""

    def current_position(self) -> Mapping[str, Any]:
        """Where the log ends now (``copyjob run`` stops once the capture is caught up with it)."""

    def capture(self, starts: Mapping[TableName, Mapping[str, Any]]) -> ChangeCapture:
        """The change stream of the tables of ``starts``, each after its position."""

    def at_or_before(self, position: Mapping[str, Any], bound: Mapping[str, Any]) -> bool: ...

    def describe(self, position: Mapping[str, Any]) -> str:
        """A position for people (logs, ``copyjob status``)."""

    def consumed_past(self, committed: Mapping[TableName, Mapping[str, Any]]) -> dict[TableName, str]:
        """The tables of ``committed`` (their positions) whose changes another consumer of the stream took (the
        source was confirmed past them), each with where the source was confirmed to."""

    def close(self) -> None: ...
