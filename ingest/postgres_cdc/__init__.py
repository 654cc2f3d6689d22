"""Change data capture from PostgreSQL: logical replication with pgoutput.

- :mod:`~ingest.postgres_cdc.pgoutput`: the message decoder (positions ``{"lsn", "seq"}``);
- :mod:`~ingest.postgres_cdc.stream`: the slot's stream as change batches (a ``ChangeCapture``), acknowledged
  only for what is durable downstream;
- :mod:`~ingest.postgres_cdc.handoff`: the slot created with an exported snapshot (gap-free handoff);
- :mod:`~ingest.postgres_cdc.setup`: server checks, publication, replica identity, slot information and drop;
- :mod:`~ingest.postgres_cdc.capture`: the log source (:class:`copyjob.core.capture.LogSource`) the orchestrator
  uses, which joins the modules above to the PostgreSQL connector.

The modules above talk to PostgreSQL only; connection parameters and the type mapping come from
:mod:`~ingest.postgres_cdc.capture`, which also reads snapshots through the PostgreSQL connector (and is not
imported here: it is opened through ``copyjob.ingest.open_log_source``).
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
