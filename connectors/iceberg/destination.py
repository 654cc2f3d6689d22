"""Apache Iceberg tables as a destination: ``destination: {url: file:///lake | s3://bucket/prefix, format:
iceberg, options: {...}}`` (catalog options: :mod:`.catalog`).

One Iceberg table per job table, ``<namespace>.<name>``: the target's schema is the namespace, else the
``namespace`` option. Column types: :mod:`.types` (docs/types-iceberg.md). The primary key is the table
property ``copyjob.primary-key`` (Iceberg does not enforce keys: ``enforces_primary_key`` is False in the
tests). Loads: :mod:`.session`; markers travel in snapshot summaries (:mod:`.markers`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from copyjob.connectors._load_checks import check_load_key
from copyjob.connectors.iceberg import markers
from copyjob.connectors.iceberg.catalog import open_catalog, settings
from copyjob.connectors.iceberg.session import PRIMARY_KEY_PROPERTY, IcebergLoadSession
from copyjob.connectors.iceberg.types import columns_of, field_for, iceberg_schema

from copyjob.core.contracts import (
    DestinationCapabilities,
    MaintenanceReport,
    MaintenanceSettings,
    StateMarker,
    UpdateMethod,
)
from copyjob.core.errors import ConfigurationError, ConnectionFailed, TableNotFound
from copyjob.core.redaction import redact
from copyjob.core.schema import Column, TableName, TableSchema
from copyjob.core.urls import ConnectionUrl

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.table import Table

log = logging.getLogger("copyjob")
POINTER_PREFIX = "copyjob.marker-table:"


class IcebergDestination:
    capabilities = DestinationCapabilities(transactional=True, supports_merge=True, preferred_batch_rows=100_000,
                                           markers_alone=True)

    def __init__(self, url: ConnectionUrl) -> None:
        self.url = url
        self.settings = settings(url)
        self.catalog = open_catalog(self.settings)
        self._pointers: dict[tuple[str, ...], str] = {}
        self._alone: dict[str, str] = {}
        """Markers written alone (:meth:`write_marker`), as the namespace records them."""
        """(job, marker name) → the table holding it (JSON [namespace, name]), as the namespace records it."""

    # ------------------------------------------------------------ names

    def identifier(self, table: TableName) -> tuple[str, str]:
        if not table.name:
            raise ConfigurationError("an Iceberg table needs a name")
        return (table.schema or self.settings.namespace, table.name)

    def load_table(self, table: TableName) -> Table | None:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return self._guard(lambda: self.catalog.load_table(self.identifier(table)), table)
        except (NoSuchTableError, NoSuchNamespaceError):
            return None

    def _require(self, table: TableName) -> Table:
        found = self.load_table(table)
        if found is None:
            raise TableNotFound(f"Iceberg table {table} does not exist in {self.settings.display}")
        return found

    def _guard(self, action: Any, table: TableName) -> Any:
        """Run a catalog call; failures to reach it become ConnectionFailed (retriable), passwords redacted."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return action()
        except (NoSuchTableError, NoSuchNamespaceError):
            raise
        except (OSError, ConnectionError) as exc:
            raise ConnectionFailed(f"Iceberg table {table} in {self.settings.display}: "
                                   f"{redact(' '.join(str(exc).split()))}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("sqlalchemy"):
                raise ConnectionFailed(f"Iceberg catalog {redact(self.settings.uri)}: "
                                       f"{redact(' '.join(str(exc).split()))}") from exc
            raise

    # ------------------------------------------------------------ the contract

    def reflect(self, table: TableName) -> TableSchema | None:
        found = self.load_table(table)
        if found is None:
            return None
        key = json.loads(found.properties.get(PRIMARY_KEY_PROPERTY, "[]"))
        return TableSchema(table=table, columns=columns_of(found.schema()), primary_key=tuple(key))

    def create_table(self, schema: TableSchema, *, primary_key: bool = True, key_index: bool = False,
                     partition_by: Sequence[str] = ()) -> None:
        """Create the table (and its namespace); ``partition_by`` (else the job file's ``partition_by:`` for the
        table, given in the URL) partitions it by those columns' values (identity transforms)."""
        ident = self.identifier(schema.table)
        properties = {PRIMARY_KEY_PROPERTY: json.dumps(list(schema.primary_key))} if primary_key and \
            schema.primary_key else {}
        ice = iceberg_schema(schema.columns)
        spec = self._partition_spec(schema, ice, partition_by or self.settings.partition_by.get(str(schema.table), ()))
        self._guard(lambda: self.catalog.create_namespace_if_not_exists(ident[0]), schema.table)
        self._guard(lambda: self.catalog.create_table(ident, ice, partition_spec=spec, properties=properties),
                    schema.table)

    def _partition_spec(self, schema: TableSchema, ice: Any, columns: Sequence[str]) -> Any:
        from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
        from pyiceberg.transforms import IdentityTransform

        if not columns:
            return UNPARTITIONED_PARTITION_SPEC
        fields = []
        for i, name in enumerate(columns):
            try:
                source = ice.find_field(name)
            except ValueError as exc:
                raise ConfigurationError(f"partition_by: {name!r} is not a column of {schema.table} (columns: "
                                         f"{', '.join(schema.column_names)})") from exc
            fields.append(PartitionField(source_id=source.field_id, field_id=1000 + i, transform=IdentityTransform(),
                                         name=name))
        return PartitionSpec(*fields)

    def add_columns(self, table: TableName, columns: Sequence[Column]) -> None:
        """Schema evolution: the new columns are nullable (rows already there have no value for them)."""
        found = self._require(table)
        present = {f.name for f in found.schema().fields}
        new = [c for c in columns if c.name not in present]
        if not new:
            return
        with found.update_schema() as update:
            for c in new:
                f = field_for(0, c, required=False)
                update.add_column(c.name, f.field_type, doc=f.doc)

    def drop_table(self, table: TableName) -> None:
        """Drop the table and delete its files (pyiceberg's purge). Its markers, which live in its snapshots, go
        with it: the table starts over, which is what a missing marker means."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            self._guard(lambda: self.catalog.purge_table(self.identifier(table)), table)
        except (NoSuchTableError, NoSuchNamespaceError):
            pass

    def begin_load(self, schema: TableSchema, method: UpdateMethod, key: Sequence[str],
                   truncate: bool = False, deferred_key: Sequence[str] = ()) -> IcebergLoadSession:
        check_load_key(schema, method, key)
        table = self._require(schema.table)
        table_key = tuple(json.loads(table.properties.get(PRIMARY_KEY_PROPERTY, "[]")))
        return IcebergLoadSession(table, schema, method, tuple(key), truncate or method == "overwrite",
                                  tuple(deferred_key), table_key, self._remember(schema.table))

    def read_marker(self, job: str, table: str) -> StateMarker | None:
        """The job's marker named ``table`` in the table it was committed to (:mod:`.markers`): the table of that
        name, or the one the namespace's pointer names (markers named otherwise, e.g. per Kafka partition)."""
        found = self.load_table(self._marker_table(job, table))
        marker = markers.find(found, job, table) if found is not None else None
        if marker is None and found is None:
            text = self._alone.get(markers.marker_key(job, table))
            marker = markers.parse(job, table, text) if text else None
        return marker

    def write_marker(self, marker: StateMarker) -> None:
        """A marker alone, while its table does not exist (``markers_alone``): kept in the namespace's
        properties (one catalog write); once the table exists, the markers its commits carry are the truth."""
        namespace = self.settings.namespace
        where = TableName(marker.table, namespace)
        self._guard(lambda: self.catalog.create_namespace_if_not_exists(namespace), where)
        self._guard(lambda: self.catalog.update_namespace_properties(
            namespace, updates={markers.marker_key(marker.job, marker.table): markers.value(marker)}), where)

    # ------------------------------------------------------------ where a marker lives

    def _pointer_key(self, job: str, name: str) -> str:
        return POINTER_PREFIX + json.dumps([job, name])

    def _marker_table(self, job: str, name: str) -> TableName:
        """The table holding marker ``name``: the pointer recorded at its first commit, else the table of that
        name."""
        from pyiceberg.exceptions import NoSuchNamespaceError

        try:  # read each time: another process may have committed since
            props = self._guard(lambda: self.catalog.load_namespace_properties(self.settings.namespace),
                                TableName(name))
        except NoSuchNamespaceError:
            props = {}
        self._pointers = {tuple(json.loads(k[len(POINTER_PREFIX):])): v for k, v in props.items()
                          if k.startswith(POINTER_PREFIX)}
        self._alone = {k: v for k, v in props.items() if k.startswith(markers.MARKER_PREFIX)}
        pointer = self._pointers.get((job, name))
        if pointer is None:
            return TableName.parse(name)
        namespace, table = json.loads(pointer)
        return TableName(table, namespace)

    def _remember(self, target: TableName) -> Callable[[StateMarker], None]:
        """Before a commit: a marker not named after its table gets a pointer in the namespace's properties (a
        catalog write of its own, made before the table commit: a crash between them leaves a pointer to a table
        that holds the previous marker or none, which is what it holds)."""

        def remember(marker: StateMarker) -> None:
            ident = self.identifier(target)
            value = json.dumps(list(ident))
            self._marker_table(marker.job, marker.table)  # loads the recorded pointers
            current = self._pointers.get((marker.job, marker.table))
            if current == value or (current is None and marker.table == str(target)):
                return
            namespace = self.settings.namespace
            self._guard(lambda: self.catalog.create_namespace_if_not_exists(namespace), target)
            self._guard(lambda: self.catalog.update_namespace_properties(
                namespace, updates={self._pointer_key(marker.job, marker.table): value}), target)
            self._pointers[(marker.job, marker.table)] = value

        return remember

    def snapshot_version(self, table: TableName) -> str | None:
        from copyjob.connectors.iceberg.snapshot import version_of

        found = self.load_table(table)
        return None if found is None else version_of(found)

    def read_snapshot(self, table: TableName, schema: TableSchema) -> tuple[str, Iterator[pa.RecordBatch]]:
        """The table's current snapshot, read whole (``copyjob verify``; :mod:`.snapshot`)."""
        from copyjob.connectors.iceberg.snapshot import read_current

        return read_current(self._require(table), schema, lambda action: self._guard(action, table))

    def maintain(self, table: TableName, settings: MaintenanceSettings) -> MaintenanceReport:
        from copyjob.connectors.iceberg.maintenance import maintain

        return maintain(self._require(table), table, settings)

    def close(self) -> None:
        engine = getattr(self.catalog, "engine", None)
        if engine is not None:
            engine.dispose()
