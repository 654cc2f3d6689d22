"""PostgreSQL as a log source: the glue between the PostgreSQL connector (connection parameters, reflection,
the type mapping, snapshot reads) and the logical replication code of this package, whose other modules import
no connector.

:class:`PostgresCdc` is the :class:`copyjob.core.capture.LogSource` the CDC orchestrator uses:

- ``prepare(plans)``: server settings and privileges, each table's replica identity, the publication;
- ``stream_exists()``: whether the job's replication slot exists;
- ``snapshot(copy)``: creates the job's slot (or, when it exists, a temporary one) with an exported snapshot
  and calls ``copy(source, position)`` with a source whose every connection reads that snapshot;
- ``current_position()``: emits a ``copyjob.stop`` message; ``capture(...).caught_up(it)`` says when the
  stream has handed out everything committed before it;
- ``capture(starts)``: the slot's stream, decoding the tables of ``starts``;
- ``at_or_before``, ``describe``: order and display of positions ``{"lsn", "seq"}``;
- ``consumed_past(committed)``: the tables whose changes another consumer of the slot confirmed;
- ``close()``.

:func:`open_setup` is the slot/publication helper alone, for ``copyjob status``/``check``/``drop``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from copyjob.core.capture import CaptureOptions, LogSource
from copyjob.core.contracts import SnapshotResult, Source, StreamPositions
from copyjob.core.errors import ConfigurationError
from copyjob.core.schema import LogicalType, TableName
from copyjob.core.urls import ConnectionUrl

if TYPE_CHECKING:
    from copyjob.ingest.postgres_cdc import PgChangeStream, ReplicationSetup

    from copyjob.core.plan import TablePlan

log = logging.getLogger(__name__)
SCHEMES = ("postgresql",)


def slot_name(name: str, options: CaptureOptions) -> str:
    from copyjob.ingest.postgres_cdc import default_name

    return options.slot or default_name(name)


def publication_name(name: str, options: CaptureOptions) -> str:
    from copyjob.ingest.postgres_cdc import default_name

    return options.publication or default_name(name)


def open_setup(url: ConnectionUrl, name: str, options: CaptureOptions) -> ReplicationSetup:
    """The slot/publication catalog helper of a job (for status, check and drop: no source reads). ``name``
    names the defaults (``copyjob_<name>``)."""
    from copyjob.connectors.postgres import connect
    from copyjob.ingest.postgres_cdc import ReplicationSetup

    return ReplicationSetup(lambda: connect(url, autocommit=True), url.redacted, slot=slot_name(name, options),
                            publication=publication_name(name, options), job=name)


class PostgresCdc(LogSource):
    """Change capture from one PostgreSQL source."""

    parallel_snapshot = True
    """Snapshot readers may run in parallel: every clone of the pinned source imports the same snapshot."""

    def __init__(self, url: ConnectionUrl, name: str, options: CaptureOptions, source: Source,
                 positions: StreamPositions | None = None) -> None:
        from copyjob.connectors.postgres import connection_params

        self._positions = positions
        self._url = url
        self._options = options
        self._source = source
        self._params = connection_params(url)
        self.where = url.redacted
        self.setup = open_setup(url, name, options)
        self._keys: dict[TableName, tuple[str, ...]] = {}
        self._types: dict[tuple[int, int], LogicalType] = {}

    # ------------------------------------------------------------ preparing

    def check(self, plans: Sequence[TablePlan]) -> list[str]:
        """Every unmet need: settings, privileges, each table's replica identity, the slot, the publication."""
        deletes_carry: dict[TableName, tuple[str, ...]] = {}
        for plan in plans:
            table = plan.source_schema.table
            source_key = tuple(plan.table.key or plan.source_schema.primary_key)
            self._keys[table] = source_key
            deletes_carry[table] = source_key if plan.table.update_method == "merge" else ()
        return self.setup.problems(deletes_carry, create_publication=self._options.publication_create)

    def prepare(self, plans: Sequence[TablePlan]) -> None:
        """:meth:`check`, then make the publication cover the tables (nothing is created when a check fails)."""
        problems = self.check(plans)
        if problems:
            raise ConfigurationError("; ".join(problems))
        added = self.setup.ensure_publication([p.source_schema.table for p in plans],
                                              create=self._options.publication_create)
        if added:
            log.info("publication %s now publishes %s", self.setup.publication, ", ".join(map(str, added)))

    def stream_exists(self) -> bool:
        return self.setup.slot_info() is not None

    # ------------------------------------------------------------ snapshot → stream

    def snapshot(self, copy: Callable[[Source, Mapping[str, Any]], int]) -> SnapshotResult:
        from copyjob.connectors.postgres import PostgresSource
        from copyjob.ingest.postgres_cdc import ExportedSnapshot

        temporary = self.stream_exists()
        with ExportedSnapshot(self._params, self.where, self.setup.slot, temporary=temporary) as exported:
            def read(snapshot_name: str) -> int:
                pinned = PostgresSource(self._url, snapshot=snapshot_name)
                try:
                    return copy(pinned, exported.position)
                finally:
                    pinned.close()

            return exported.run(read)

    def current_position(self) -> dict[str, Any]:
        from copyjob.ingest.postgres_cdc import STOP_PREFIX

        return {"lsn": self.setup.emit_message(STOP_PREFIX, secrets.token_hex(8)), "seq": -1}

    def capture(self, starts: Mapping[TableName, Mapping[str, Any]]) -> PgChangeStream:
        from copyjob.ingest.postgres_cdc import PgChangeStream, PgOutputDecoder, StreamOptions

        decoder = PgOutputDecoder(self._logical_type, self._keys, set(starts),
                                  columnar=self._options.columnar_inserts)
        options = StreamOptions(slot=self.setup.slot, publication=self.setup.publication,
                                batch_events=self._options.batch_events,
                                max_batch_delay_s=self._options.max_batch_delay_s,
                                heartbeat_s=self._options.heartbeat_s,
                                before_confirm=self._record if self._positions is not None else None)
        return PgChangeStream(self._params, self.where, options, decoder)

    def _record(self, flush_lsn: int) -> None:
        assert self._positions is not None
        self._positions.record(str(flush_lsn))

    def consumed_past(self, committed: Mapping[TableName, Mapping[str, Any]]) -> dict[TableName, str]:
        """Tables of ``committed`` (their positions) behind the slot's confirmed position, when the slot was
        confirmed past what this job recorded before its own confirmations: another process consumed it."""
        from copyjob.ingest.postgres_cdc import format_lsn

        recorded = self._positions.recorded() if self._positions is not None else None
        info = self.setup.slot_info()
        if recorded is None or info is None or info.confirmed_flush is None or info.confirmed_flush <= int(recorded):
            return {}
        return {name: format_lsn(info.confirmed_flush) for name, position in committed.items()
                if int(position["lsn"]) < info.confirmed_flush}

    def _logical_type(self, oid: int, typmod: int) -> LogicalType:
        """A column's logical type from its Relation message: the connector's own type mapping, applied to the
        base type (one catalog query per type the server does not have built in)."""
        from copyjob.connectors.postgres import logical_type
        from copyjob.ingest.postgres_cdc import BUILTIN_TYPES

        found = self._types.get((oid, typmod))
        if found is None:
            name = BUILTIN_TYPES.get(oid)
            if name is None:
                name, domain_typmod = self.setup.base_type(oid)
                typmod = domain_typmod if domain_typmod is not None else typmod
            found = self._types[(oid, typmod)] = logical_type(name, typmod)
        return found

    # ------------------------------------------------------------ positions

    @staticmethod
    def at_or_before(position: Mapping[str, Any], bound: Mapping[str, Any]) -> bool:
        return (int(position["lsn"]), int(position["seq"])) <= (int(bound["lsn"]), int(bound["seq"]))

    @staticmethod
    def describe(position: Mapping[str, Any]) -> str:
        from copyjob.ingest.postgres_cdc import format_lsn

        seq = int(position.get("seq", -1))
        return format_lsn(int(position["lsn"])) + (f"#{seq}" if seq >= 0 else "")

    # ------------------------------------------------------------ operations

    def close(self) -> None:
        self.setup.close()
