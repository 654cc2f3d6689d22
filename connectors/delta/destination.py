"""Delta Lake tables as a destination (``destination: {url: ./lake | s3://bucket/prefix, format: delta}``),
written with delta-rs (``deltalake``).

Layout: one Delta table per job table, ``<root>/<target name>`` (the name percent-encoded as one folder, see
:class:`Lake`). The table's schema carries each column's logical type in its field metadata and the primary key
in the table property ``copyjob.primaryKey`` (docs/types-delta.md).

Transactional: a load is one Delta commit (data, deletes and updates: :mod:`.session`) and its state marker
rides in that same commit (:mod:`.markers`). A crash before the commit leaves nothing; after it, the marker is
there with the data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from copyjob.connectors._load_checks import check_load_key
from copyjob.connectors.delta.errors import deltalake, translated
from copyjob.connectors.delta.markers import find, table_names
from copyjob.connectors.delta.session import DeltaLoadSession
from copyjob.connectors.delta.storage import Lake, open_lake
from copyjob.connectors.delta.types import PRIMARY_KEY_PROPERTY, schema_from_delta, storage_field, storage_schema
from copyjob.connectors.files.filesystem import guarded

from copyjob.core.contracts import (
    DestinationCapabilities,
    MaintenanceReport,
    MaintenanceSettings,
    StateMarker,
    UpdateMethod,
)
from copyjob.core.errors import ConfigurationError, TableNotFound
from copyjob.core.schema import Column, TableName, TableSchema
from copyjob.core.urls import ConnectionUrl


class DeltaDestination:
    # a load is one commit of Parquet files: batches of a few hundred thousand rows make files of useful size
    capabilities = DestinationCapabilities(transactional=True, supports_merge=True, preferred_batch_rows=250_000)

    def __init__(self, url: ConnectionUrl) -> None:
        self.lake: Lake = open_lake(url)

    # ------------------------------------------------------------ tables

    def table(self, table: TableName | str) -> Any:
        """The table's ``DeltaTable`` at its latest version, or None when there is none."""
        uri = self.lake.uri(str(table))
        options = self.lake.storage_options or None
        if not translated(lambda: deltalake().DeltaTable.is_deltatable(uri, storage_options=options), table):
            return None
        return translated(lambda: deltalake().DeltaTable(uri, storage_options=options), table)

    def reflect(self, table: TableName) -> TableSchema | None:
        dt = self.table(table)
        if dt is None:
            return None
        return schema_from_delta(table, dt.schema().to_json(), dict(dt.metadata().configuration))

    def create_table(self, schema: TableSchema, *, primary_key: bool = True, key_index: bool = False) -> None:
        """Create the Delta table (partitioned as the job file's ``partition_by:`` says); Delta has no indexes,
        so ``key_index`` has nothing to create and the key is recorded only when ``primary_key``."""
        partition_by = list(self.lake.partition_by.get(str(schema.table), ()))
        unknown = [c for c in partition_by if schema.column(c) is None]
        if unknown:
            raise ConfigurationError(f"{schema.table}: partition_by names column(s) {unknown} that the table does "
                                     f"not have (columns: {', '.join(schema.column_names)})")
        config = {PRIMARY_KEY_PROPERTY: json.dumps(list(schema.primary_key))} if primary_key else {}
        translated(lambda: deltalake().DeltaTable.create(
            self.lake.uri(str(schema.table)), storage_schema(schema), mode="error", partition_by=partition_by or None,
            configuration=config, storage_options=self.lake.storage_options or None,
            raise_if_key_not_exists=False), schema.table)

    def add_columns(self, table: TableName, columns: Sequence[Column]) -> None:
        """Schema evolution: the columns are added nullable (the rows already there have no value)."""
        dt = self._require(table)
        current = self.reflect(table)
        assert current is not None
        added = [storage_field(replace(c, nullable=True)) for c in columns if current.column(c.name) is None]
        if added:
            delta_fields = [deltalake().schema.Field.from_arrow(f) for f in added]
            translated(lambda: dt.alter.add_columns(delta_fields), table)

    def drop_table(self, table: TableName) -> None:
        """Remove the table's folder (log and data files; its markers go with it); nothing when it has none."""
        root = self.lake.root
        full = root.full(self.lake.folder(str(table)))
        info = guarded(lambda: root.fs.get_file_info(full), root.display)
        if info.type != pafs.FileType.NotFound:
            guarded(lambda: root.fs.delete_dir(full), root.display)

    def set_primary_key(self, table: TableName, key: Sequence[str]) -> None:
        dt = self._require(table)
        translated(lambda: dt.alter.set_table_properties({PRIMARY_KEY_PROPERTY: json.dumps(list(key))},
                                                         raise_if_not_exists=False), table)

    def begin_load(self, schema: TableSchema, method: UpdateMethod, key: Sequence[str],
                   truncate: bool = False, deferred_key: Sequence[str] = ()) -> DeltaLoadSession:
        check_load_key(schema, method, key)
        current = self.reflect(schema.table)
        if current is None:
            raise TableNotFound(f"Delta table {schema.table} does not exist under {self.lake.root.display}")
        missing = [c for c in schema.columns if current.column(c.name) is None]
        if missing:  # schema evolution on write (Delta's mergeSchema): a column the source gained since
            self.add_columns(schema.table, missing)
            current = self.reflect(schema.table) or current
        return DeltaLoadSession(self, schema, current, method, tuple(key), truncate or method == "overwrite",
                                tuple(deferred_key))

    def read_marker(self, job: str, table: str) -> StateMarker | None:
        """The marker of the job's last commit (:mod:`.markers`), from the table it lives in."""
        for name in table_names(table):
            dt = self.table(name)
            if dt is not None:
                return find(dt, job, table)
        return None

    def snapshot_version(self, table: TableName) -> str | None:
        dt = self.table(table)
        return None if dt is None else f"Delta version {dt.version()}"

    def read_snapshot(self, table: TableName, schema: TableSchema) -> tuple[str, Iterator[pa.RecordBatch]]:
        """The table's latest version, read whole (``copyjob verify``; :mod:`.snapshot`)."""
        from copyjob.connectors.delta.snapshot import read_version

        return read_version(self._require(table), schema)

    def maintain(self, table: TableName, settings: MaintenanceSettings) -> MaintenanceReport:
        from copyjob.connectors.delta.maintenance import maintain

        return maintain(self._require(table), table, settings)

    def close(self) -> None:
        pass

    def _require(self, table: TableName) -> Any:
        dt = self.table(table)
        if dt is None:
            raise TableNotFound(f"Delta table {table} does not exist under {self.lake.root.display}")
        return dt
