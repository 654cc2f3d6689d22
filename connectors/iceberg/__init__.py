"""Apache Iceberg tables as a destination (``format: iceberg``), through pyiceberg.

- :mod:`.catalog`: the catalog (SQL on SQLite or PostgreSQL, REST) and warehouse from the destination's options;
- :mod:`.types`: copyjob's logical types as Iceberg types and back;
- :mod:`copyjob.connectors._key_ops`: a load's deletes and column updates by key, in Arrow (shared with Parquet);
- :mod:`.markers`: state markers in snapshot summaries;
- :mod:`.session`: one load, committed with its state marker in one catalog commit;
- :mod:`.destination`: :class:`IcebergDestination` (the Destination contract, ``maintain``);
- :mod:`.maintenance`: compaction, snapshot expiry and file clean-up (``copyjob maintain``).
"""

from copyjob.core.errors import require

require("pyiceberg", "iceberg")

from copyjob.connectors.iceberg.destination import IcebergDestination  # noqa: E402

__all__ = ["IcebergDestination"]
