"""PostgreSQL connector: :class:`PostgresSource` reads with binary COPY into Arrow batches;
:class:`PostgresDestination` writes with binary COPY inside one transaction per load, together with the
state marker. Both speak PostgreSQL's binary COPY format directly for PostgreSQL → PostgreSQL copies.

Modules: ``_connect`` (connections, error translation), ``_catalog`` (type mapping, reflection, DDL),
``source``, ``destination`` and ``_load`` (one load session).
"""

from copyjob.connectors.postgres._catalog import logical_type
from copyjob.connectors.postgres._connect import connect, connection_params, translate
from copyjob.connectors.postgres.destination import PostgresDestination
from copyjob.connectors.postgres.source import PostgresSource

__all__ = ["PostgresDestination", "PostgresSource", "connect", "connection_params", "logical_type", "translate"]
