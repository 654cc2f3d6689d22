"""Change data capture from PostgreSQL: logical replication with pgoutput.

- :mod:`~ingest.postgres_cdc.pgoutput`: the message decoder (positions ``{"lsn", "seq"}``);
- :mod:`~ingest.postgres_cdc.stream`: the slot's stream as change batches (a ``ChangeCapture``), acknowledged
  only for what is durable downstream;
- :mod:`~ingest.postgres_cdc.handoff`: the slot created with an exported snapshot (gap-free handoff);
- :mod:`~ingest.postgres_cdc.setup`: server checks, publication, replica identity, slot information and drop.

This package talks to PostgreSQL only; connection parameters and the type mapping come from the caller
(``copyjob.cdc_postgres``), which also reads snapshots through the PostgreSQL connector.
"""

from copyjob.ingest.postgres_cdc._replication import format_lsn, parse_lsn
from copyjob.ingest.postgres_cdc._types import BUILTIN_TYPES
from copyjob.ingest.postgres_cdc.handoff import ExportedSnapshot, snapshot_position
from copyjob.ingest.postgres_cdc.pgoutput import PgOutputDecoder, Relation
from copyjob.ingest.postgres_cdc.setup import ReplicationSetup, SlotInfo, default_name
from copyjob.ingest.postgres_cdc.stream import STOP_PREFIX, PgChangeStream, StreamOptions

__all__ = [
    "BUILTIN_TYPES",
    "STOP_PREFIX",
    "ExportedSnapshot",
    "PgChangeStream",
    "PgOutputDecoder",
    "Relation",
    "ReplicationSetup",
    "SlotInfo",
    "StreamOptions",
    "default_name",
    "format_lsn",
    "parse_lsn",
    "snapshot_position",
]
