"""The few small interfaces where the stages meet. Stage packages (snapshot, ingest, apply, offsets) and
connectors import only this module and copyjob's shared vocabulary, never each other.

- :class:`Source`: a connection to a source system: reflect a table, read it as Arrow record batches
  (optionally filtered by a :class:`RowFilter`), answer small aggregate questions (max, null count, key ranges).
- :class:`Destination`: a connection to a destination system: reflect/create/alter tables and open a
  :class:`LoadSession`, which writes batches with one update method and commits them together with a
  :class:`StateMarker` (the incremental state the data belongs to) in one transaction where the system allows.
- :class:`StateStore`: the job's state: per-table watermarks and outcomes, run history (package ``offsets``).
- :class:`FileSetSource`: a folder or S3 prefix whose table entries are sets of files (:class:`FileSet`):
  list them (:class:`FileInfo`), open one as a :class:`FileReader`; copied file by file (copyjob.file_copy).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from copyjob.core.changes import ChangeBatch
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema

if TYPE_CHECKING:
    import pyarrow as pa


UpdateMethod = Literal["append", "overwrite", "merge"]
CopyMode = Literal["full", "incremental", "cdc"]


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Bound:
    value: Any
    inclusive: bool


@dataclass(frozen=True)
class RowFilter:
    """Which rows to read: ``lower < column <= upper`` style ranges on one column, or only its NULLs.

    Connectors render it with their own quoting and bind the values as parameters.
    """

    column: str
    lower: Bound | None = None
    upper: Bound | None = None
    only_nulls: bool = False


@dataclass(frozen=True)
class SourceCapabilities:
    postgres_binary: bool = False
    """Can stream ``COPY … TO STDOUT (FORMAT binary)`` bytes (:meth:`Source.copy_out_binary`)."""
    files: bool = False
    """A set of files rather than tables: the source is a :class:`FileSetSource`."""


@dataclass(frozen=True)
class IndexInfo:
    """An index (or unique/primary key constraint) of a source table on plain columns, in index order.
    Expression and partial indexes are left out: they cannot serve as a key or a watermark."""

    name: str
    columns: tuple[str, ...]
    unique: bool
    primary: bool = False


class Source(Protocol):
    capabilities: SourceCapabilities

    def reflect(self, table: TableName) -> TableSchema:
        """The table's columns (logical types) and primary key. Raises TableNotFound."""

    def table_names(self) -> list[TableName]:
        """The tables and views a job may name (for "did you mean" when it names one that does not exist);
        empty for sources of files."""

    def estimate_rows(self, table: TableName) -> int | None:
        """About how many rows the table has, from the catalog's statistics where the system keeps them (a
        count for embedded files); None when it has no estimate yet (never analyzed). Cheap: ``init`` asks it
        for every table."""

    def indexes(self, table: TableName) -> list[IndexInfo]:
        """The table's indexes on plain columns, the primary key's among them (``primary``)."""

    def increasing_columns(self, table: TableName) -> tuple[str, ...]:
        """Integer columns whose values the system assigns in increasing order (identity, serial,
        AUTO_INCREMENT, SQLite's INTEGER PRIMARY KEY): candidates for an incremental column."""

    def read(self, schema: TableSchema, filters: Sequence[RowFilter] = (),
             batch_rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        """Rows of ``schema.columns`` matching every filter, as batches with ``schema.arrow_schema()``."""

    def max_value(self, table: TableName, column: str) -> Any:
        """``MAX(column)``, or None for an empty table."""

    def count(self, table: TableName, filters: Sequence[RowFilter] = ()) -> int:
        """``COUNT(*)`` of the rows matching every filter."""

    def key_range(self, table: TableName, column: str) -> tuple[Any, Any]:
        """``(MIN(column), MAX(column))``: the snapshot splits an integer key into chunks with it."""

    def copy_out_binary(self, schema: TableSchema, filters: Sequence[RowFilter] = ()) -> Iterator[bytes]:
        """PostgreSQL binary COPY stream of the rows (only where ``capabilities.postgres_binary``)."""

    def clone(self) -> Source:
        """Another connection to the same system (for parallel readers)."""

    def close(self) -> None: ...


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class DestinationCapabilities:
    transactional: bool = True
    """Data and the state marker commit in one transaction."""
    supports_merge: bool = True
    postgres_binary: bool = False
    """Accepts a PostgreSQL binary COPY stream (:meth:`LoadSession.write_binary`)."""
    preferred_batch_rows: int = 50_000
    files: bool = False
    """Writes one output file per source file: its sessions are :class:`FileLoadSession`."""
    markers_alone: bool = False
    """Commits a state marker without data and without its table (:meth:`Destination.write_marker`): the Kafka
    apply side then records its position past dead letters while the destination table does not exist."""
    generated_columns: bool = False
    """Creates a source's stored generated columns generated (``Column.generated``) and computes them itself:
    change capture, whose log leaves them out, needs it for tables that have them."""


@dataclass(frozen=True)
class StateMarker:
    """The incremental state that a load belongs to; committed with the data (see ``_copyjob_state``)."""

    job: str
    table: str
    run_id: str
    state: dict[str, Any]


class LoadSession(Protocol):
    """One transaction's worth of writes into one destination table.

    Steps, in the order a caller performs them:
    1. ``begin_load`` opens the transaction; overwrite/truncate empty the table inside it.
    2. ``write`` (or ``write_binary``) adds batches; merge stages them and upserts by key.
    3. ``commit(marker)`` writes the state marker and commits data and marker together.
    ``abort`` rolls back everything since step 1.
    """

    def write(self, batch: pa.RecordBatch) -> int: ...

    def write_binary(self, chunks: Iterator[bytes]) -> int: ...

    def delete_keys(self, keys: pa.RecordBatch) -> int:
        """Delete, inside the transaction, the rows whose key equals a row of ``keys`` (key columns only).
        Used by merge to apply deletes; returns the rows deleted."""

    def update_columns(self, rows: pa.RecordBatch) -> int:
        """Update only the columns present in ``rows`` (which also hold the key columns) of the rows with
        those keys, inside the transaction; returns the rows updated. Used for changes that leave some
        values untouched (PostgreSQL's unchanged TOAST).

        Both match on the load's key (else its deferred key, else the table's primary key; ConfigurationError
        when there is none) and work under every update method. Order of effects: ``write``, ``delete_keys``
        and ``update_columns`` take effect in call order. A delete or update touches the table's rows and, in
        a merge load, the rows staged by earlier ``write`` calls; a ``write`` after it stages the key again
        and wins at commit. Counts are of the table's rows (staged merge rows are counted by ``write``; a
        destination that writes a merge batch straight into the table counts its rows again); NULL
        keys match nothing. Details: connectors/_keys.py."""

    def commit(self, marker: StateMarker | None) -> None: ...

    def abort(self) -> None: ...


class FileLoadSession(LoadSession, Protocol):
    def begin_file(self, name: str) -> None:
        """The next writes form the output named after the source file ``name`` (a relative path); an output
        of that name already there is replaced at commit."""


class Destination(Protocol):
    capabilities: DestinationCapabilities

    def reflect(self, table: TableName) -> TableSchema | None:
        """The destination table's schema, or None when it does not exist."""

    def create_table(self, schema: TableSchema, *, primary_key: bool = True, key_index: bool = False) -> None:
        """Create ``schema.table`` (and its schema/database when missing) with the mapped column types.

        ``primary_key`` False: without its primary key (a load adds it at the end, ``deferred_key``);
        ``key_index``: instead of the key, an ordinary non-unique index on ``schema.primary_key`` (the table of
        an append, which keeps every row of a key). Systems without indexes (files) ignore both.
        """

    def add_columns(self, table: TableName, columns: Sequence[Column]) -> None: ...

    def drop_table(self, table: TableName) -> None:
        """Remove ``table`` with its rows (files: its data files and recorded schema); nothing when it does not
        exist. Its markers may go with it (it is loaded again at once, with a new one). Used only when an edit of
        the job file starts the table over in a shape the table cannot take (``copyjob.apply.target``)."""

    def begin_load(self, schema: TableSchema, method: UpdateMethod, key: Sequence[str],
                   truncate: bool = False, deferred_key: Sequence[str] = ()) -> LoadSession:
        """Open a load of ``schema.columns`` into ``schema.table`` (which exists).

        ``truncate`` empties the table inside the load's transaction (overwrite implies it).
        ``deferred_key``: the table was just created without its primary key (``create_table(...,
        primary_key=False)``) so that a bulk load is fast; the session adds this key as the last step before
        commit, as pg_restore does.
        """

    def read_marker(self, job: str, table: str) -> StateMarker | None:
        """The last marker committed with data for (job, table), or None."""

    def write_marker(self, marker: StateMarker) -> None:
        """Commit ``marker`` alone, in a transaction of its own; the table it names need not exist (only where
        ``capabilities.markers_alone``). For positions that moved past records that change no table (the Kafka
        apply side's dead letters while its destination table does not exist yet)."""

    def close(self) -> None: ...


# ---------------------------------------------------------------- table maintenance

PARTITION_BY_OPTION = "partition_by"
"""Destination URL query key carrying the job file's per-table ``partition_by:`` (JSON: target table name →
column list) to lakehouse destinations, which create their tables partitioned so."""


@dataclass(frozen=True)
class MaintenanceSettings:
    """What ``copyjob maintain`` does to each lakehouse table (Delta Lake, Iceberg)."""

    compact: bool = True
    """Rewrite small data files into larger ones (Delta: optimize/compact; Iceberg: rewrite data files)."""
    target_file_bytes: int = 128 * 2**20
    """The size compaction aims for."""
    retention_s: float = 7 * 86400.0
    """Files no longer referenced (Delta: vacuum) and snapshots (Iceberg: expire) older than this are removed;
    readers of an older version need it to stay longer than their longest query."""
    dry_run: bool = False
    """Report what would be done, change nothing."""


@dataclass(frozen=True)
class MaintenanceReport:
    """What maintenance did to one table: counts before and after, and one line per action taken."""

    table: TableName
    files_before: int
    files_after: int
    actions: tuple[str, ...] = ()


@runtime_checkable
class Maintainable(Protocol):
    """A destination whose tables need compaction and clean-up (``copyjob maintain``)."""

    def maintain(self, table: TableName, settings: MaintenanceSettings) -> MaintenanceReport: ...


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class DigestColumn:
    """One column as ``copyjob verify`` hashes it on one side (canonical text: ``connectors/_canonical.py``)."""

    name: str
    """The column's name on this side."""
    want: LogicalType
    """The source column's type: it decides the canonical text on both sides."""
    have: Column
    """The column as this side reflects it (what is stored)."""
    in_sql: bool = True
    """Canonicalised and hashed inside the database; False: fetched and hashed in Python (both sides alike)."""


@dataclass(frozen=True)
class KeySpan:
    """Rows whose ``column`` is ``>= lower`` and ``< upper`` (None: unbounded), and match ``filters``."""

    column: str
    lower: Any = None
    upper: Any = None
    filters: tuple[RowFilter, ...] = ()


class RowDigests(Protocol):
    """Row counts and order-free hashes of a table's rows computed inside the database (``copyjob verify``).

    A digest is the sum modulo 2**64 of each row's hash over its canonical text; columns with ``in_sql``
    False are hashed in Python from their fetched values and added to the same sum."""

    def can_canonicalise(self, column: DigestColumn) -> bool:
        """Whether this system spells the column's canonical text in SQL."""

    def native_hash(self, columns: Sequence[DigestColumn]) -> str | None:
        """The system (and version) whose fast hash of a row's own values :meth:`with_native_hash` uses for
        ``columns``; None when it has none for them. Two sides with the same answer and the same native column
        types may both use it."""

    def with_native_hash(self) -> RowDigests:
        """The same, with digests over the fast native row hash (rows are still compared by canonical text)."""

    def key_bounds(self, table: TableName, span: KeySpan) -> tuple[Any, Any, int]:
        """``(MIN, MAX, COUNT(*))`` of the span's key column over the span."""

    def digest(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan) -> tuple[int, int]:
        """``(rows, digest)`` of the span."""

    def bucket_digests(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan,
                       width: int) -> dict[int, tuple[int, int]]:
        """Per bucket ``(key - span.lower) // width`` of an integer key: ``(rows, digest)``; empty buckets absent.
        The digest hashes the bucket whole, its rows' texts in key order (``connectors/_canonical.ordered_hash``),
        plus the hashes of the columns hashed in Python (a native row hash: the sum, as :meth:`digest`)."""

    def split_points(self, table: TableName, span: KeySpan, parts: int) -> list[Any]:
        """Up to ``parts - 1`` increasing key values that cut the span into parts of about equal rows."""

    def rows(self, table: TableName, columns: Sequence[DigestColumn], key: Sequence[str],
             span: KeySpan) -> Iterator[tuple[tuple[Any, ...], tuple[str | None, ...]]]:
        """Each row of the span: its key values as stored, and the canonical text of each of ``columns``."""

    def close(self) -> None: ...


@runtime_checkable
class SupportsDigests(Protocol):
    """A source or destination that computes :class:`RowDigests` (the SQL databases; not files or Parquet)."""

    def digests(self) -> RowDigests: ...


@runtime_checkable
class SupportsSnapshotReads(Protocol):
    """A destination whose tables are files of a table format (Delta, Iceberg): ``copyjob verify`` reads a
    table's current snapshot through the format's own reader (deletion vectors and delete files applied)."""

    def snapshot_version(self, table: TableName) -> str | None:
        """The table's current snapshot, named for a report (``Delta version 7``, ``Iceberg snapshot 4711``);
        None: no table."""

    def read_snapshot(self, table: TableName, schema: TableSchema) -> tuple[str, Iterator[pa.RecordBatch]]:
        """The version read and the rows of that snapshot, as batches of ``schema.arrow_schema()`` (``schema``:
        the table as reflected)."""


# ---------------------------------------------------------------- change capture


class StreamPositions(Protocol):
    """Where a job last confirmed its change stream to the source, as the position ledger recorded it before
    confirming (``copyjob.offsets.ledger``). A source confirmed further than this was consumed by another
    process: the changes in between never reached this job's destination."""

    def recorded(self) -> str | None: ...

    def record(self, position: str) -> None: ...


class ChangeCapture(Protocol):
    """A change stream (ingest/): started from a source position, it hands out change batches in source
    order and is told, with :meth:`ack`, up to where the changes are durable downstream, so that it can
    release the source's log (PostgreSQL: confirm the flushed LSN; MySQL: nothing to release).

    Reads never block for long: :meth:`next_batches` returns an empty list when nothing arrived in time.
    Opened by a log source (:class:`copyjob.core.capture.LogSource`).
    """

    caught_up_at: float | None
    """Epoch seconds when the stream last had handed out everything the source had sent (None: not yet)."""

    def next_batches(self, timeout_s: float) -> list[ChangeBatch]: ...

    def caught_up(self, end: Mapping[str, Any]) -> bool:
        """Whether everything up to ``end`` (the source's ``current_position()``) was handed out."""

    def ack(self, position: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SnapshotResult:
    """What a snapshot hands to streaming: where the change stream must start so nothing is missed or
    applied twice (Debezium's shape: completed / skipped / aborted)."""

    status: Literal["completed", "skipped", "aborted"]
    position: Mapping[str, Any]
    rows: int = 0


# ---------------------------------------------------------------- file sets

FileFormat = Literal["csv", "jsonl", "parquet"]
SOURCE_FILE_COLUMN = "_source_file"
"""The column that names each row's source file (``source_file_column: true``)."""


@dataclass(frozen=True)
class FileInfo:
    """One file of a file source: its path relative to the source root ('/'-separated), its modification time
    in nanoseconds since the epoch, its size in bytes."""

    path: str
    mtime_ns: int
    size: int


class CsvReadOptions(Protocol):
    """How CSV files are read (the job file's ``csv:`` block, ``copyjob.jobfile.CsvOptions``)."""

    delimiter: str
    header: bool
    encoding: str
    quote_char: str
    null_values: list[str]


@dataclass(frozen=True)
class FileSet:
    """A table entry of a file source: which files (a glob relative to the source root) and how to read them."""

    name: str
    pattern: str
    format: FileFormat
    csv: CsvReadOptions
    source_file_column: bool = False


class FileColumnsGrew(Exception):
    """Raised by :meth:`FileReader.batches` when a later part of a file has columns that ``columns`` lacked
    (JSON lines may add keys anywhere): the caller adds them to the table and reads the file again."""

    def __init__(self, columns: Sequence[Column]) -> None:
        super().__init__(", ".join(c.name for c in columns))
        self.columns = tuple(columns)


class FileReader(Protocol):
    """One opened source file. ``columns`` is known as soon as it is open (CSV header and first block,
    Parquet footer, first block of JSON lines), before any row is handed out."""

    file: FileInfo
    columns: tuple[Column, ...]

    def batches(self, schema: TableSchema) -> Iterator[pa.RecordBatch]:
        """The file's rows as batches with ``schema.arrow_schema()`` (columns the file lacks are NULL).

        Raises BadFile (naming the file and line) or :class:`FileColumnsGrew`."""

    def close(self) -> None: ...


class FileSetSource(Protocol):
    capabilities: SourceCapabilities

    def list_files(self, pattern: str) -> list[FileInfo]:
        """The files matching ``pattern`` (relative to the source root; ``**`` crosses folders), from one
        listing; hidden names (``.``/``_`` prefix) are skipped."""

    def infer_schema(self, files: FileSet, listed: Sequence[FileInfo]) -> TableSchema | None:
        """The set's columns from a quick look at its newest readable file; None when none can be read."""

    def read_file(self, files: FileSet, file: FileInfo, known: TableSchema | None = None, *,
                  batch_rows: int = 50_000) -> FileReader:
        """Open ``file``: columns in ``known`` are read with its types, others inferred. Raises BadFile."""

    def close(self) -> None: ...


# ---------------------------------------------------------------- state


@dataclass
class TableState:
    """What the state store knows about one table of one job."""

    table: str
    watermark: Any = None
    watermark_type: str | None = None
    last_run_id: str | None = None
    last_run_at: datetime | None = None
    last_status: str | None = None
    last_error: str | None = None
    needs_full: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TableRunRecord:
    table: str
    mode: str
    status: str  # "ok" | "failed" | "skipped"
    rows_read: int = 0
    rows_written: int = 0
    duration_s: float = 0.0
    watermark_before: Any = None
    watermark_after: Any = None
    null_watermark_rows: int = 0
    error: str | None = None
    note: str | None = None
    """Why the table started over this run when the job file's edit said so (e.g. "incremental column
    changed: ts → seq")."""
    changes: dict[str, int] | None = None
    """CDC: the changes applied by kind (``inserts``, ``updates``, ``deletes``); None for other modes."""
    reread_rows: int | None = None
    """An incremental merge: how many of ``rows_read`` are at the previous watermark's value, read again (rows
    copied last run among them, merged again by key); None when not counted."""
    dead_letters: int | None = None
    """Kafka apply: the table's events sent to its dead-letter topic by this run; None when nothing applied."""


@dataclass
class RunRecord:
    run_id: str
    job: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"  # "running" | "ok" | "failed" | "skipped"
    trigger: str = "manual"
    tables: list[TableRunRecord] = field(default_factory=list)


class RunLockHandle(Protocol):
    """A held per-job run lock (released on context exit)."""

    def release(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None: ...


class LockHolder(Protocol):
    def describe(self) -> str: ...


class StateStore(Protocol):
    def acquire_lock(self, job: str, holder: str, *, wait_s: float = 0.0) -> RunLockHandle | None:
        """Take the job's run lock, waiting up to ``wait_s``; None while another live run holds it."""

    def lock_info(self, job: str) -> LockHolder | None: ...

    def load(self, job: str, table: str) -> TableState: ...

    def load_all(self, job: str) -> dict[str, TableState]: ...

    def save(self, job: str, state: TableState) -> None:
        """Write one table's state atomically."""

    def reset(self, job: str, tables: Sequence[str] | None) -> list[str]:
        """Mark tables (all when None) so their next run is a full copy; returns the tables reset."""

    def start_run(self, run: RunRecord) -> None: ...

    def finish_run(self, run: RunRecord) -> None: ...

    def history(self, job: str, limit: int = 20) -> list[RunRecord]: ...

    def adopt_unscoped(self, job: str, scope: str) -> bool:
        """Move the rows a store written before scopes keeps under the bare job name to ``scope``, once."""

    def get_meta(self, job: str, key: str) -> str | None:
        """A small named value of the job (serve: a schedule's last fire time), or None."""

    def set_meta(self, job: str, key: str, value: str) -> None: ...

    def close(self) -> None: ...
