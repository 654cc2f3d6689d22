"""MySQL and MariaDB as a log source: the glue between the MySQL connector (connections, reflection, value
conversion, snapshot reads) and the binlog capturer of this package, whose other modules import no connector.

:class:`MysqlCdc` is the :class:`copyjob.core.capture.LogSource` the CDC orchestrator uses, as
:class:`copyjob.ingest.postgres_cdc.capture.PostgresCdc` is:

- ``prepare(plans)``: the binlog settings and replication privileges (one line per unmet need);
- ``stream_exists()``: always true: the binlog is the server's, nothing is created for a job;
- ``snapshot(copy)``: opens a consistent-snapshot transaction, reads its binlog position and calls
  ``copy(source, position)`` with a source whose reads run in that transaction (one reader at a time);
- ``current_position()``: where the binlog ends now; ``capture(...).caught_up(it)`` says when the stream has
  handed out everything committed before it;
- ``capture(starts)``: the binlog reader, each table starting after its position;
- ``at_or_before``, ``describe``: order and display of positions (:mod:`ingest.mysql_cdc.positions`);
- ``consumed_past(committed)``: always empty: a binlog is read, never consumed, so no other reader takes changes;
- ``close()``: closes the connection tables are reflected on (every other use opens and closes its own).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from copyjob.core.capture import CaptureOptions, LogSource
from copyjob.core.contracts import SnapshotResult, Source, StreamPositions
from copyjob.core.errors import ConfigurationError, ConnectionFailed
from copyjob.core.schema import TableName, TableSchema
from copyjob.core.urls import ConnectionUrl

if TYPE_CHECKING:
    from copyjob.connectors.mysql import MysqlSource
    from copyjob.ingest.mysql_cdc import MysqlBinlogCapture, Position, ServerInfo

    from copyjob.core.plan import TablePlan

log = logging.getLogger(__name__)
SCHEMES = ("mysql", "mariadb")


def default_server_id(name: str) -> int:
    """A replica server id derived from the job's name (``cdc.server_id`` overrides it): stable across runs, and
    unlikely to collide with real replicas, which are usually numbered from 1."""
    return 1_000_000 + zlib.crc32(name.encode()) % 1_000_000_000


class MysqlCdc(LogSource):
    """Change capture from one MySQL/MariaDB source."""

    parallel_snapshot = False
    """The snapshot is one transaction on one connection: its tables are read one after the other."""

    def __init__(self, url: ConnectionUrl, name: str, options: CaptureOptions, source: Source,
                 positions: StreamPositions | None = None) -> None:
        """``positions`` is not needed: a binlog is read, never consumed, so no other reader takes changes.
        ``name`` gives the default replica server id."""
        from copyjob.connectors.mysql import MysqlSource

        if not isinstance(source, MysqlSource):
            raise ConfigurationError(f"{url.redacted}: not a MySQL/MariaDB source")
        self._url = url
        self._source: MysqlSource = source
        self._options = options
        self._server_id = options.server_id or default_server_id(name)
        self.where = url.redacted
        self._server: ServerInfo | None = None
        self._reflector: MysqlSource | None = None

    # ------------------------------------------------------------ preparing

    @property
    def server(self) -> ServerInfo:
        """The server's flavour and GTID mode, once its settings and privileges passed the checks."""
        if self._server is None:
            from copyjob.ingest.mysql_cdc import server_info

            with self._connection() as conn:
                self._server = server_info(conn, self.where)
        return self._server

    @server.setter
    def server(self, value: ServerInfo) -> None:
        self._server = value

    def check(self, plans: Sequence[TablePlan]) -> list[str]:
        """Every unmet binlog setting and replication privilege (the tables need nothing: rows are logged whole)."""
        from copyjob.ingest.mysql_cdc.checks import server_problems

        with self._connection() as conn:
            info, problems = server_problems(conn, self.where)
        if not problems:
            self._server = info
        return problems

    def prepare(self, plans: Sequence[TablePlan]) -> None:
        """:meth:`check` (nothing is created on the server); warn about tables a consistent snapshot cannot read
        consistently (not InnoDB)."""
        problems = self.check(plans)
        if problems:
            raise ConfigurationError("; ".join(problems))
        log.info("%s: %s, binlog positions by %s", self.where, self.server.version,
                 "GTID" if self.server.gtid else "file and offset")
        tables = [p.source_schema.table for p in plans]
        if not tables:
            return
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE "
                        + " OR ".join(["(TABLE_SCHEMA = %s AND TABLE_NAME = %s)"] * len(tables)),
                        [v for t in tables for v in (t.schema, t.name)])
            for schema, name, engine in cur.fetchall():
                if engine and str(engine).lower() != "innodb":
                    log.warning("%s.%s uses %s: its snapshot is read in a transaction, which only InnoDB tables "
                                "see consistently", schema, name, engine)

    def stream_exists(self) -> bool:
        """Always: the binlog is the server's, nothing is created for a job."""
        return True

    # ------------------------------------------------------------ snapshot → stream

    def snapshot(self, copy: Callable[[Source, Mapping[str, Any]], int]) -> SnapshotResult:
        """Steps of :mod:`ingest.mysql_cdc.snapshot`, then ``copy(source, position)`` reads inside the snapshot
        transaction, which ends (rolled back) when ``copy`` returns."""
        from copyjob.connectors.mysql import translated_errors
        from copyjob.ingest.mysql_cdc import begin_consistent_snapshot

        server = self.server
        source = self._source.clone()  # its own connections: a snapshot may run beside the stream
        try:
            with source.pinned() as conn:
                with translated_errors(self._url):
                    position = begin_consistent_snapshot(conn, server, self.where)
                log.info("%s: snapshot at %s; reading the tables", self.where, self.describe(position))
                rows = copy(source, position)
        finally:
            source.close()
        return SnapshotResult(status="completed", position=position, rows=rows)

    def current_position(self) -> Position:
        from copyjob.ingest.mysql_cdc import current_position

        with self._connection() as conn:
            return current_position(conn)

    def capture(self, starts: Mapping[TableName, Mapping[str, Any]], *,
                stop_at: Mapping[str, Any] | None = None) -> MysqlBinlogCapture:
        """The binlog reader for ``starts`` (table → position after which its changes are read); bounded by
        ``stop_at`` (e.g. :meth:`current_position` when a run starts) when given."""
        from copyjob.connectors.mysql import connection_settings, translate, value_converter
        from copyjob.ingest.mysql_cdc import CaptureTable, MysqlBinlogCapture

        tables = [CaptureTable(table=t, schema=self._reflect(t), start=dict(p)) for t, p in starts.items()]
        delay = self._options.max_batch_delay_s
        return MysqlBinlogCapture(
            connection=connection_settings(self._url), server=self.server, tables=tables,
            server_id=self._server_id, reflect=self._reflect, converter_for=value_converter,
            batch_events=self._options.batch_events, heartbeat_s=min(1.0, max(0.05, delay)), where=self.where,
            translate=lambda exc: translate(exc, self._url, None), stop_at=stop_at)

    # ------------------------------------------------------------ positions

    @staticmethod
    def at_or_before(position: Mapping[str, Any], bound: Mapping[str, Any]) -> bool:
        from copyjob.ingest.mysql_cdc import at_or_before

        return at_or_before(position, bound)

    @staticmethod
    def describe(position: Mapping[str, Any]) -> str:
        """A transaction's GTID and the change's number in it (``0-1-17#2``), a GTID position between
        transactions (``0-1-16``), or without GTIDs the binlog file and offset (``binlog.000003:4567#2``)."""
        row = int(position.get("row") or 0)
        suffix = f"#{row}" if row else ""
        if position.get("gtid") and row:
            return f"{position['gtid']}{suffix}"
        if position.get("gtid_pos") and not row:
            return str(position["gtid_pos"])
        return f"{position.get('file')}:{position.get('pos')}{suffix}"

    def consumed_past(self, committed: Mapping[TableName, Mapping[str, Any]]) -> dict[TableName, str]:
        """Nothing: a binlog is read, never consumed, so no other reader takes a job's changes."""
        return {}

    # ------------------------------------------------------------ operations

    def close(self) -> None:
        if self._reflector is not None:
            self._reflector.close()
            self._reflector = None

    def _reflect(self, table: TableName) -> TableSchema:
        """The table's schema now, on a connection of the capture's own, opened again after it was lost (the
        server restarted): the stream then goes on reading once the server is back."""
        if self._reflector is None:
            self._reflector = self._source.clone()
        try:
            return self._reflector.reflect(table)
        except ConnectionFailed:
            self._reflector.close()
            self._reflector = None
            raise

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        from copyjob.connectors.mysql import connect, translated_errors

        conn = connect(self._url)
        try:
            with translated_errors(self._url):
                yield conn
        finally:
            conn.close()
