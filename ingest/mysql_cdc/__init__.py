"""Change capture from MySQL and MariaDB: the row-based binlog, read as a replica would.

- :mod:`~ingest.mysql_cdc.checks`: what the server must provide (ROW binlog with full images and metadata,
  replication privileges), checked first, one line per unmet need;
- :mod:`~ingest.mysql_cdc.snapshot`: a consistent snapshot and the binlog position it belongs to;
- :mod:`~ingest.mysql_cdc.reader`: the binlog reader (:class:`MysqlBinlogCapture`);
- :mod:`~ingest.mysql_cdc.positions`: positions (GTID and file/offset) and their order;
- :mod:`~ingest.mysql_cdc.capture`: the log source (:class:`copyjob.core.capture.LogSource`) the orchestrator
  uses, which joins the modules above to the MySQL connector.

Connection arguments, reflection and value conversion come from :mod:`~ingest.mysql_cdc.capture` (copyjob's
MySQL connector): the other modules import no connector. The capture is not imported here: it is opened
through ``copyjob.ingest.open_log_source``.
"""

from copyjob.ingest.mysql_cdc.checks import ServerInfo, server_info
from copyjob.ingest.mysql_cdc.positions import Position, at_or_before, earliest, is_binlog_position, order_key
from copyjob.ingest.mysql_cdc.reader import CaptureTable, MysqlBinlogCapture
from copyjob.ingest.mysql_cdc.snapshot import begin_consistent_snapshot, current_position

__all__ = [
    "CaptureTable",
    "MysqlBinlogCapture",
    "Position",
    "ServerInfo",
    "at_or_before",
    "begin_consistent_snapshot",
    "current_position",
    "earliest",
    "is_binlog_position",
    "order_key",
    "server_info",
]
