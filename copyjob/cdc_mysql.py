"""MySQL and MariaDB's part of change capture: the glue between the MySQL connector (connections, reflection,
value conversion, snapshot reads) and the binlog capturer in :mod:`ingest.mysql_cdc`, which imports no
connector.

:class:`MysqlCdc` gives the orchestrator (:mod:`copyjob.cdc`) its per-source hooks, as
:class:`copyjob.cdc_postgres.PostgresCdc` does:

- ``prepare(plans)``: the binlog settings and replication privileges (one line per unmet need);
- ``stream_exists()``: always true: the binlog is the server's, nothing is created for a job;
- ``snapshot(copy)``: opens a consistent-snapshot transaction, reads its binlog position and calls
  ``copy(source, position)`` with a source whose reads run in that transaction (one reader at a time);
- ``current_position()``: where the binlog ends now; ``capture(...).caught_up(it)`` says when the stream has
  handed out everything committed before it;
- ``capture(starts)``: the binlog reader, each table starting after its position;
- ``at_or_before``, ``describe``: order and display of positions (:mod:`ingest.mysql_cdc.positions`);
- ``slot_status()`` and ``drop()``: nothing to show or drop (a replica leaves nothing on the server).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from copyjob.errors import ConfigurationError
from copyjob.interfaces import SnapshotResult, Source
from copyjob.jobfile import CdcSettings, parse_duration
from copyjob.schema import TableName
from copyjob.urls import ConnectionUrl

if TYPE_CHECKING:
    from connectors.mysql import MysqlSource
    from ingest.mysql_cdc import MysqlBinlogCapture, Position, ServerInfo

log = logging.getLogger("copyjob.cdc")
SCHEMES = ("mysql", "mariadb")


def default_server_id(job: str) -> int:
    """A replica server id derived from the job name (``cdc.server_id`` overrides it): stable across runs, and
    unlikely to collide with real replicas, which are usually numbered from 1."""
    return 1_000_000 + zlib.crc32(job.encode()) % 1_000_000_000


class MysqlCdc:
    """Change capture hooks for one MySQL/MariaDB source (checked on construction)."""

    def __init__(self, url: ConnectionUrl, job: str, settings: CdcSettings, source: Source) -> None:
        from connectors.mysql import MysqlSource, _connect, _errors
        from ingest.mysql_cdc import server_info

        if not isinstance(source, MysqlSource):
            raise ConfigurationError(f"{url.redacted}: not a MySQL/MariaDB source")
        self._url = url
        self._source: MysqlSource = source
        self._settings = settings
        self._server_id = settings.server_id or default_server_id(job)
        self.where = url.redacted
        conn = _connect(url)
        try:
            with _errors(url):
                self.server: ServerInfo = server_info(conn, self.where)
        finally:
            conn.close()

    def snapshot(self, copy: Callable[[Source], int]) -> SnapshotResult:
        """Steps 1–3 of :mod:`ingest.mysql_cdc.snapshot`, then ``copy`` reads inside the snapshot; the snapshot
        transaction ends (rolled back) when ``copy`` returns."""
        from connectors.mysql import _errors
        from ingest.mysql_cdc import begin_consistent_snapshot

        with self._source.pinned() as conn:
            with _errors(self._url):
                position = begin_consistent_snapshot(conn, self.server, self.where)
            log.info("%s: snapshot at binlog %s:%s (GTID %s); reading the tables", self.where, position["file"],
                     position["pos"], position.get("gtid_pos", "-"))
            rows = copy(self._source)
        return SnapshotResult(status="completed", position=position, rows=rows)

    def current_position(self) -> Position:
        from connectors.mysql import _connect, _errors
        from ingest.mysql_cdc import current_position

        conn = _connect(self._url)
        try:
            with _errors(self._url):
                return current_position(conn, self.server)
        finally:
            conn.close()

    def capture(self, starts: Mapping[TableName, Mapping[str, Any]], *,
                stop_at: Mapping[str, Any] | None = None) -> MysqlBinlogCapture:
        """The binlog reader for ``starts`` (table → position after which its changes are read); bounded by
        ``stop_at`` (e.g. :meth:`current_position` when a run starts) when given."""
        from connectors.mysql import _translate, connection_settings, value_converter
        from ingest.mysql_cdc import CaptureTable, MysqlBinlogCapture

        tables = [CaptureTable(table=t, schema=self._source.reflect(t), start=dict(p)) for t, p in starts.items()]
        delay = parse_duration(self._settings.max_batch_delay)
        return MysqlBinlogCapture(
            connection=connection_settings(self._url), server=self.server, tables=tables,
            server_id=self._server_id, reflect=self._source.reflect, converter_for=value_converter,
            batch_events=self._settings.batch_events, heartbeat_s=min(1.0, max(0.05, delay)), where=self.where,
            translate=lambda exc: _translate(exc, self._url, None), stop_at=stop_at)

    @staticmethod
    def at_or_before(position: Mapping[str, Any], bound: Mapping[str, Any]) -> bool:
        from ingest.mysql_cdc import at_or_before

        return at_or_before(position, bound)
