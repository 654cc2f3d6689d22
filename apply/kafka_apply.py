"""The apply side of ``transport: kafka``: a consumer-group member that merges events into the destination.

Records are taken in batches, split per table partition (and where the writer's schema version changes), folded
per key and written with the table's update method by ``apply.changes.apply_changes``. The common case of a
merge table whose segment holds only upserts of one schema (snapshot rows, the watermark poller's updates) is
decoded column-wise into one Arrow batch (``connectors.kafka.batch_decode``), folded with Arrow (the last row
of a key wins) and written with one ``LoadSession.write``: no Python object per row. Anything else (deletes,
tombstones, ``before`` images, append tables, JSON) takes the event-by-event path, and so does a fast segment
that fails to write, so that the bad event can be isolated and dead-lettered as below. Order per key holds:
a key always lands in the same partition, and a partition is applied in offset order by one member at a time.
The member polls and decodes on its own thread while one writer thread (``apply.write_behind``) applies the
previous poll; every destination call goes through that thread, in order, and before partitions are revoked
(or the member stops) the writes it holds are finished.

The apply commit, per table partition (steps in this order):
1. write the segment's changes in one destination transaction together with the state marker
   ``<table>#<partition>`` = ``{"offset": next offset}`` (exactly once into SQL destinations; at least once,
   made idempotent by merge, where the destination has no transactions);
2. an event that cannot be applied is isolated by halving the segment until it stands alone, sent with its
   error to ``<prefix>.<table>.dlq`` (flushed; ``apply.dead_letters``), and skipped by committing the marker
   past it (while the destination table does not exist, the marker alone: a restart does not send it again);
3. commit the Kafka group offsets, for monitoring only. On assignment a partition starts at the offset of its
   marker, so a member killed between 1 and 3 (or during 1) neither loses nor repeats a change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import groupby, repeat
from operator import is_not, itemgetter
from typing import TYPE_CHECKING, Protocol

from copyjob.apply.changes import APPEND_COLUMNS, apply_changes
from copyjob.apply.dead_letters import DeadLetters
from copyjob.apply.epochs import claimed_epoch, start_epoch
from copyjob.apply.target import prepare_target
from copyjob.apply.write_behind import WriteBehind
from copyjob.connectors.kafka.arrow_bytes import arange
from copyjob.connectors.kafka.batch_decode import decode_upserts
from copyjob.connectors.kafka.codec import EPOCH_HEADER, DecodedMessage, Decoder, unchanged_columns
from copyjob.offsets.ledger import EPOCH_KEY

from copyjob.core.changes import UNCHANGED_TOAST, ChangeBatch, ChangeEvent
from copyjob.core.contracts import Destination, StateMarker
from copyjob.core.errors import ConfigurationError, is_retriable
from copyjob.core.plan import TableJob
from copyjob.core.retry import on_conflict
from copyjob.core.schema import TableName, TableSchema
from copyjob.core.transport import Record, Subscription, Transport
from copyjob.core.urls import redact

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("copyjob.kafka")
_TOPIC_PARTITION = itemgetter(0, 1)  # fields of Record, read without a Python call per record
_HEADERS = itemgetter(5)
_VALUE = itemgetter(4)
WITHOUT_TABLE = "without_table"
"""Set in a partition's marker committed while the destination table did not exist."""
POLL_RECORDS = 25_000
"""Records of one write at most (three such are held at once: polled, queued, being written). 1,000,000 rows
applied on a quiet machine: 187,270/s at 329 MB peak; 50,000 gave the same rate at 390 MB."""
POLL_TIMEOUT_S = 0.2
"""How long records are gathered at most while the writer is busy."""
LATENCY_POLL_S = 0.02
"""How long a poll waits for records: what arrived by then (and what the consumer already fetched besides) is
written at once when the writer is idle."""


@dataclass
class TableStats:
    events: int = 0
    upserted: int = 0
    deleted: int = 0
    appended: int = 0
    dlq: int = 0
    last_error: str | None = None

    @property
    def written(self) -> int:
        return self.upserted + self.deleted + self.appended


class MessageDecoder(Protocol):
    """Decodes a topic that another tool wrote (Debezium's Connect JSON: connectors.kafka.debezium_decode)."""

    def decode(self, value: bytes | None, key: bytes | None = None,
               headers: Sequence[tuple[str, bytes | None]] | None = None) -> DecodedMessage: ...

    def attach(self, reflect: Callable[[], TableSchema | None]) -> None:
        """Where to find the destination table's schema (for messages that carry none)."""


@dataclass
class ApplyTable:
    """One job table as the apply side sees it: where its events come from and how they are written."""

    table: TableJob
    topic: str
    dlq: str
    stats: TableStats = field(default_factory=TableStats)
    decoder: MessageDecoder | None = None
    """The topic's own decoder when another tool wrote it (None: copyjob's avro/json); it reads the key too."""
    start_latest: bool = False
    """A partition without a marker starts at its end (only changes from now on), not at its beginning."""
    epoch: str = ""
    """The epoch the destination table holds (offsets.ledger; its partitions' markers keep it): the first
    event of a newer one empties the table, events of an older one are skipped."""
    targets: dict[TableSchema, tuple[TableSchema, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.table.target_name

    def marker_name(self, partition: int) -> str:
        return f"{self.name}#{partition}"

    def target(self, source: TableSchema) -> tuple[TableSchema, tuple[str, ...]]:
        """The destination schema and key (destination names) for a writer's schema version."""
        found = self.targets.get(source)
        if found is None:
            spec = self.table
            rename = spec.columns
            key = tuple(rename.get(k, k) for k in (spec.key or source.primary_key))
            target = source.renamed(TableName.parse(spec.target_name), rename)
            if self.table.update_method == "merge":
                if not key:
                    raise ConfigurationError(f"merge into {spec.target_name} needs a key: the source has no "
                                             "primary key, so name the key columns")
                target = TableSchema(target.table, target.columns, key)
            found = self.targets[source] = (target, key)
        return found


@dataclass
class Segment:
    table: ApplyTable
    schema: TableSchema | None
    items: list[tuple[Record, ChangeEvent | None]]
    rows: pa.RecordBatch | None = None
    """Set for a segment of upserts decoded column-wise: their ``after`` images (``items`` stays empty)."""
    records: list[Record] = field(default_factory=list)
    """The records of a column-wise segment."""

    @property
    def first(self) -> Record:
        return self.records[0] if self.records else self.items[0][0]

    @property
    def next_offset(self) -> int:
        return (self.records[-1] if self.records else self.items[-1][0]).offset + 1

    @property
    def size(self) -> int:
        return len(self.records) or len(self.items)


class Applier:
    """Applies the job's topics into one destination; ``step`` handles one poll's worth of records."""

    def __init__(self, job: str, tables: Sequence[ApplyTable], transport: Transport, destination: Destination,
                 run_id: str, group_id: str, prefix: str, create_tables: bool = True, *,
                 from_beginning: bool = False, limits: dict[tuple[str, int], int] | None = None) -> None:
        self.job = job
        self.by_topic = {t.topic: t for t in tables}
        self.transport = transport
        self.destination = destination
        self.run_id = run_id
        self.prefix = prefix
        self.create_tables = create_tables
        self.from_beginning = from_beginning
        self.limits = limits or {}
        """Per partition, the offset where applying stops (replay); records from there on are skipped."""
        self.decoder = Decoder(transport.schemas)
        self.applied: dict[tuple[str, int], int] = {}
        self._prepared: set[TableSchema] = set()
        self._known_schema: dict[str, TableSchema] = {}
        self.dead_letters = DeadLetters(transport, prefix)
        self._writer = WriteBehind()
        self._finished: dict[tuple[str, int], int] = {}
        """Offsets the writer has committed into the destination since the last group-offset commit."""
        self._finished_lock = threading.Lock()
        self._submitted = self._written = 0
        self._gathered: list[Record] = []
        """Polls handed to the writer (counted by this thread) and written (by the writer): busy while they differ."""
        for t in tables:
            if t.decoder is not None:
                t.decoder.attach(partial(self.reflect, t.name))
        self.subscription: Subscription = transport.subscribe(list(self.by_topic), group_id, self.start_at,
                                                              on_revoke=self._settle)

    def start_at(self, topic: str, partition: int) -> int | None:
        """Where the destination's marker says the partition stands; the topic's beginning when there is no
        marker or the destination table is gone (the marker is the truth only beside its data)."""
        if self.from_beginning:
            return None
        table = self.by_topic[topic]
        if self.reflect(table.name) is None and not self._passed_without_table(table, partition):
            log.info("%s: no destination table: applying partition %d of %s from its %s", table.name, partition,
                     topic, "end" if table.start_latest else "beginning")
            return self._initial(table, partition)
        marker = self._partition_marker(table, partition)
        offset = marker.state.get("offset") if marker is not None else None
        if offset is not None:
            self.applied[(topic, partition)] = int(offset)
        if marker is not None:
            table.epoch = max(table.epoch, str(marker.state.get(EPOCH_KEY) or ""))
        # emptied for a newer epoch before this partition's first write of it: its older events are skipped
        table.epoch = max(table.epoch, self._writer.call(lambda: claimed_epoch(self.destination, self.job,
                                                                                table.name)))
        return int(offset) if offset is not None else self._initial(table, partition)

    def _passed_without_table(self, table: ApplyTable, partition: int) -> bool:
        """The partition's marker was committed while the destination table did not exist: every record before
        it went to the dead-letter topic or changed nothing, so it holds (no data it could disagree with), and
        those records are not sent to the dead-letter topic again."""
        marker = self._partition_marker(table, partition)
        return marker is not None and bool(marker.state.get(WITHOUT_TABLE))

    def _partition_marker(self, table: ApplyTable, partition: int) -> StateMarker | None:
        """The partition's marker, unless it holds an offset of another topic: an edit of the job file gave the
        table another source table, so its events come from that table's topic, from its beginning."""
        name = table.marker_name(partition)
        marker = self._writer.call(lambda: self.destination.read_marker(self.job, name))
        if marker is not None and marker.state.get("topic", table.topic) != table.topic:
            return None
        return marker

    def _initial(self, table: ApplyTable, partition: int) -> int | None:
        """Where a partition without a marker starts: its beginning (None), or its end (``start_latest``: what
        came before counts as reached, so a bounded run ends). That end is stored as the partition's marker at
        once: the job's later runs go on from its first run's end, not from wherever the topic ends by then."""
        if not table.start_latest:
            return None
        end = self.transport.end_offsets(table.topic).get(partition, 0)
        self.applied[(table.topic, partition)] = max(self.applied.get((table.topic, partition), 0), end)
        marker = self._marker(table, partition, end, table.epoch)
        self._writer.call(lambda: self._marker_only(table, marker))
        return end

    def reflect(self, name: str) -> TableSchema | None:
        """The destination table's schema (None: no such table), read on the writer thread."""
        return self._writer.call(lambda: self.destination.reflect(TableName.parse(name)))

    def stored_offset(self, topic: str, partition: int) -> int:
        """Where the destination stands for a partition, whichever member applied it."""
        marker = self._partition_marker(self.by_topic[topic], partition)
        return int(marker.state.get("offset", 0)) if marker is not None else 0

    def close(self) -> None:
        """Finish the writes already asked for, then leave the group."""
        try:
            self._writer.close()
            self._commit_group_offsets()
        finally:
            self.subscription.close()

    def _settle(self) -> None:
        """Before partitions are revoked: every polled record is written (or has failed), so the next owner
        starts from the offsets the destination then holds."""
        gathered, self._gathered = self._gathered, []
        self._submit(gathered)
        self._writer.call(lambda: None)

    # ------------------------------------------------------------ the loop

    def step(self, timeout_s: float = POLL_TIMEOUT_S, max_records: int = POLL_RECORDS) -> int:
        """Poll once, decode what came and hand it to the writer thread (which applies it while the next poll
        runs); returns the number of records handled. Raises the failure of an earlier write."""
        self._writer.raise_failure()
        records = self._poll(max_records, timeout_s)
        self._commit_group_offsets()
        return self._submit(records)

    def _submit(self, records: list[Record]) -> int:
        """Decode ``records`` and hand them to the writer thread."""
        if self.limits:
            records = self._within_limits(records)
        if not records:
            return 0
        segments = list(self._segments(records))
        self._submitted += 1
        self._writer.submit(lambda: self._apply_all(segments))
        return len(records)

    def _poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Records as soon as the writer can take them (one write is one destination transaction):
        1. a short poll (``LATENCY_POLL_S``): a stream's changes are not held back to fill a batch;
        2. then, without waiting, what the consumer has already fetched: a backlog fills the write (up to
           ``max_records``) at no cost in latency;
        3. while the writer is still busy with the previous write, polling goes on (up to ``timeout_s``): those
           records would wait anyway, and go in one larger write.
        A burst goes at once: a source that flushes its log every 200 ms (PostgreSQL with synchronous_commit
        off) sends a thousand changes at a time, and gathering on after such a burst held each for up to
        ``timeout_s``. Partitions revoked meanwhile get what was gathered written first (:meth:`_settle`)."""
        deadline = time.monotonic() + timeout_s
        self._gathered = self.subscription.poll(max_records, min(timeout_s, LATENCY_POLL_S))
        while len(self._gathered) < max_records:
            busy = self._written < self._submitted
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = self.subscription.poll(max_records - len(self._gathered), min(left, LATENCY_POLL_S) if busy
                                          else 0.0)
            self._gathered.extend(more)  # read after the poll: a revoke in it may have handed the list over
            if not more and not busy:
                break  # nothing waiting and the writer free: write now
        records, self._gathered = self._gathered, []
        return records

    def flush(self) -> None:
        """Wait until everything polled so far is applied; raise a write's failure."""
        self._writer.drain()
        self._commit_group_offsets()

    def _apply_all(self, segments: list[Segment]) -> None:
        """On the writer thread: apply the segments in order, noting each partition's next offset."""
        try:
            for segment in segments:
                self._apply(segment)
                key = (segment.first.topic, segment.first.partition)
                self.applied[key] = segment.next_offset
                with self._finished_lock:
                    self._finished[key] = segment.next_offset
        finally:
            self._written += 1

    def _commit_group_offsets(self) -> None:
        """3. of the apply commit: Kafka group offsets of what is in the destination, for monitoring."""
        with self._finished_lock:
            done, self._finished = self._finished, {}
        if done:
            self.subscription.commit(done)

    def _within_limits(self, records: list[Record]) -> list[Record]:
        kept = []
        for r in records:
            limit = self.limits.get((r.topic, r.partition))
            if limit is not None and r.offset >= limit:
                tp = (r.topic, r.partition)
                self.applied[tp] = max(self.applied.get(tp, 0), limit)  # reached: compaction may leave gaps
                continue
            kept.append(r)
        return kept

    def caught_up(self, ends: dict[tuple[str, int], int]) -> bool:
        """Every partition's applied offset (here or by another member) has reached ``ends``."""
        pending = [tp for tp, end in ends.items() if end > 0 and self.applied.get(tp, 0) < end]
        if set(pending) & set(self.subscription.assignment()):
            return False  # one of ours is behind: no need to ask the destination (and wait for the writer)
        for tp in pending:
            end = ends[tp]
            if self.from_beginning:
                return False
            stored = self.stored_offset(*tp)
            if stored >= end:
                self.applied[tp] = max(self.applied.get(tp, 0), stored)
                continue
            return False
        return True

    def _segments(self, records: list[Record]) -> Iterator[Segment]:
        """Consecutive records of one partition with one writer schema (tombstones join their neighbours)."""
        by_partition: dict[tuple[str, int], list[Record]] = {}
        for tp, run in groupby(records, _TOPIC_PARTITION):  # a poll brings each partition's records in runs
            by_partition.setdefault(tp, []).extend(run)
        for (topic, _), recs in by_partition.items():
            table = self.by_topic[topic]
            # runs of one epoch (offsets.ledger): records without headers have none
            for part in [recs] if not any(map(_HEADERS, recs)) else [list(r) for _, r in groupby(recs, epoch_of)]:
                fast = self._upserts(table, part)
                if fast is not None:
                    yield fast
                else:
                    yield from self._event_segments(table, part)

    def _upserts(self, table: ApplyTable, records: list[Record]) -> Segment | None:
        """The records as one column-wise segment when they are upserts of one Avro schema into a merge table."""
        first = records[0].value
        if table.table.update_method != "merge" or first is None or table.decoder is not None:
            return None
        if any(map(_HEADERS, records)) and any(r.headers and unchanged_columns(r.headers) for r in records):
            return None  # rows with values left out are updated column by column
        try:
            writer = self.decoder.writer(first)
        except Exception as exc:
            if is_retriable(exc):
                raise
            return None  # the event path dead-letters what does not decode
        if writer is None:
            return None
        schema, start = writer
        head = first[:start]
        values = list(map(_VALUE, records))
        if not all(map(is_not, values, repeat(None))) or not all(map(bytes.startswith, values, repeat(head))):
            return None
        decoded = decode_upserts(values, start, schema.columns)
        if decoded is None:
            return None
        self._known_schema[table.topic] = schema
        return Segment(table, schema, [], rows=decoded[0], records=records)

    def _event_segments(self, table: ApplyTable, recs: list[Record]) -> Iterator[Segment]:
        """Decoded message by message into change events, split where the writer's schema changes."""
        topic = table.topic
        current: Segment | None = None
        for record, event, schema in self._decoded(table, recs):
            if current is not None and schema is not None and current.schema is not None \
                    and schema != current.schema:
                yield current
                current = None
            if current is None:
                current = Segment(table, schema or self._known_schema.get(topic), [])
            elif current.schema is None:
                current.schema = schema
            current.items.append((record, event))
        if current is not None:
            yield current

    def _decoded(self, table: ApplyTable, records: list[Record]) -> Iterator[tuple[Record, ChangeEvent | None,
                                                                                   TableSchema | None]]:
        for r in records:
            if r.value is None:
                yield r, None, None
                continue
            try:
                msg = table.decoder.decode(r.value, r.key, r.headers) if table.decoder is not None \
                    else self.decoder.decode(r.value, None, r.headers)
                if msg.schema is None:
                    raise ConfigurationError("the message names no schema that copyjob can find")
                event = msg.to_event()
                unchanged = unchanged_columns(r.headers) if r.headers else None
                if unchanged and event.after is not None:  # keep the destination's value
                    after = {c: (UNCHANGED_TOAST if c in unchanged else v) for c, v in event.after.items()}
                    event = ChangeEvent(event.op, event.before, after, event.position, event.ts_ms, event.snapshot)
            except Exception as exc:
                if is_retriable(exc):
                    raise
                self._dead_letter(table, r, exc)
                yield r, None, None
                continue
            self._known_schema[table.topic] = msg.schema
            yield r, event, msg.schema

    # ------------------------------------------------------------ writing

    def _apply(self, segment: Segment) -> None:
        """1./2. of the apply commit: the whole segment, or its halves until a bad event stands alone. A write
        the destination rolled back against another member's (a deadlock) is tried again as it was."""
        if segment.rows is not None:
            try:
                on_conflict(lambda: self._write_upserts(segment), segment.table.name)
                return
            except Exception as exc:
                if is_retriable(exc):
                    raise
                log.info("%s: a batch of %d upserts failed (%s); applying it event by event", segment.table.name,
                         segment.size, redact(str(exc))[:200])
            for part in self._event_segments(segment.table, segment.records):
                self._apply(part)
            return
        try:
            on_conflict(lambda: self._write(segment), segment.table.name)
            return
        except Exception as exc:
            if is_retriable(exc) or not any(e is not None for _, e in segment.items):
                raise
            if len(segment.items) == 1:
                record, _ = segment.items[0]
                self._dead_letter(segment.table, record, exc)
                self._write(Segment(segment.table, segment.schema, [(record, None)]))
                return
            log.info("%s: a batch of %d events failed (%s); isolating the bad events", segment.table.name,
                     len(segment.items), redact(str(exc))[:200])
        half = len(segment.items) // 2
        self._apply(Segment(segment.table, segment.schema, segment.items[:half]))
        self._apply(Segment(segment.table, segment.schema, segment.items[half:]))

    def _write(self, segment: Segment) -> None:
        table = segment.table
        partition = segment.items[0][0].partition
        offset = segment.next_offset
        events = [e for _, e in segment.items if e is not None]
        own = self._epoch(table, segment)
        skip = own is None or segment.schema is None or not events  # superseded, dead letters, tombstones
        epoch = table.epoch if skip or own is None else own
        restart = epoch > table.epoch

        def marker() -> StateMarker:
            return self._marker(table, partition, offset, epoch)

        if skip or segment.schema is None:
            self._marker_only(table, marker())
            return
        target, key = table.target(segment.schema)
        method = table.table.update_method
        if restart:
            self._start_epoch(table, target, method, epoch)
        self._prepare(target, method)
        batch = ChangeBatch(table=segment.schema.table, schema=segment.schema, events=events)
        result = apply_changes(self.destination, target, batch, method="append" if method == "append" else "merge",
                               key=key, rename=table.table.columns, marker=marker)
        table.epoch = epoch
        table.stats.events += len(events)
        table.stats.upserted += result.upserted
        table.stats.deleted += result.deleted
        table.stats.appended += result.appended

    def _write_upserts(self, segment: Segment) -> None:
        """1. of the apply commit for a column-wise segment: the last row of each key, written by merge in one
        transaction with the marker."""
        assert segment.rows is not None and segment.schema is not None
        table = segment.table
        partition = segment.first.partition
        epoch = self._epoch(table, segment)
        if epoch is None:  # superseded: every record of it skipped
            self._marker_only(table, self._marker(table, partition, segment.next_offset, table.epoch))
            return
        target, key = table.target(segment.schema)
        if epoch > table.epoch:
            self._start_epoch(table, target, "merge", epoch)
        self._prepare(target, "merge")
        rename = table.table.columns
        source_names = {v: k for k, v in rename.items()}
        rows = last_per_key(segment.rows, [source_names.get(k, k) for k in key])
        batch = in_target_schema(rows, target, source_names)
        marker = self._marker(table, partition, segment.next_offset, epoch)
        session = self.destination.begin_load(target, "merge", key)
        try:
            written = session.write(batch)
            session.commit(marker)
        except BaseException:
            session.abort()
            raise
        table.epoch = epoch
        table.stats.events += segment.size
        table.stats.upserted += written

    def _prepare(self, target: TableSchema, method: str) -> None:
        if target in self._prepared:
            return
        prepare_target(self.destination, _wanted(target, method), create=self.create_tables, defer_key=False,
                       append=method == "append")
        self._prepared.add(target)

    def _start_epoch(self, table: ApplyTable, target: TableSchema, method: str, epoch: str) -> None:
        """The table starts over at ``epoch``: emptied (and created again when its shape no longer fits) once,
        by this member or by another that met the epoch first (``copyjob.apply.epochs``)."""
        start_epoch(self.destination, self.job, self.run_id, _wanted(target, method), epoch, name=table.name,
                    create=self.create_tables, append=method == "append", alone=self.from_beginning)
        self._prepared.add(target)
        table.epoch = epoch

    def _epoch(self, table: ApplyTable, segment: Segment) -> str | None:
        """The epoch of ``segment`` (offsets.ledger), None when the table moved past it (its records were
        superseded: skipped). Newer than the table's: the capture side published the table again after an edit
        of the job file or a reset, and its write starts the table over first (:meth:`_start_epoch`), unless
        another member already did."""
        epoch = epoch_of(segment.first)
        if epoch > table.epoch and not self.from_beginning:  # the claim, and the partitions' markers
            stored = [self.destination.read_marker(self.job, table.marker_name(p))
                      for p in self.transport.end_offsets(table.topic)]
            table.epoch = max([table.epoch, claimed_epoch(self.destination, self.job, table.name),
                               *(str(m.state.get(EPOCH_KEY) or "") for m in stored if m is not None)])
        return None if epoch < table.epoch else epoch

    def _marker(self, table: ApplyTable, partition: int, offset: int, epoch: str) -> StateMarker:
        """The partition's marker: the next offset to apply, of which topic, at which epoch."""
        return StateMarker(job=self.job, table=table.marker_name(partition), run_id=self.run_id,
                           state={"offset": offset, "topic": table.topic, "partition": partition,
                                  EPOCH_KEY: epoch})

    def _marker_only(self, table: ApplyTable, marker: StateMarker) -> None:
        """Advance past records that change nothing (tombstones, dead letters) in a transaction of its own; without
        a destination table (it cannot be created, or no record so far named a schema) the marker alone where the
        destination can (``markers_alone``), marked so (:meth:`_passed_without_table`): a restart does not
        dead-letter the same records again."""
        existing = self.destination.reflect(TableName.parse(table.name))
        if existing is None:
            if self.destination.capabilities.markers_alone:
                self.destination.write_marker(replace(marker, state={**marker.state, WITHOUT_TABLE: True}))
            return
        session = self.destination.begin_load(existing, "append", ())
        try:
            session.commit(marker)
        except BaseException:
            session.abort()
            raise

    def _dead_letter(self, table: ApplyTable, record: Record, exc: BaseException) -> None:
        """2. of the apply commit: the event to the table's DLQ (the caller then commits past it)."""
        error = self.dead_letters.send(table.name, record, exc)
        table.stats.dlq += 1
        table.stats.last_error = error
        log.warning("%s: event at %s[%d]@%d sent to %s: %s", table.name, record.topic, record.partition,
                    record.offset, self.dead_letters.topic(table.name), error[:300])


def _wanted(target: TableSchema, method: str) -> TableSchema:
    """The destination table for ``target``: an append table keeps every change of a key (an ordinary index on
    the key, no primary key) in rows with the change columns."""
    if method != "append":
        return target
    return TableSchema(target.table, (*target.columns, *APPEND_COLUMNS), target.primary_key)


def epoch_of(record: Record) -> str:
    """The record's epoch (offsets.ledger): "" unless its table started over after an edit of the job file."""
    for name, value in record.headers or ():
        if name == EPOCH_HEADER and value:
            return bytes(value).decode()
    return ""


def last_per_key(rows: pa.RecordBatch, key: Sequence[str]) -> pa.RecordBatch:
    """The last row of each key, in the order of those last rows (merge's fold for a batch of upserts)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = rows.num_rows
    if n < 2:
        return rows
    index = arange(n)
    keys = pa.table([rows.column(k) for k in key] + [index], names=[f"k{i}" for i in range(len(key))] + ["i"])
    last = keys.group_by([f"k{i}" for i in range(len(key))], use_threads=False).aggregate([("i", "max")])
    if last.num_rows == n:
        return rows  # every key once: nothing to fold
    order = last.column("i_max").combine_chunks()
    return rows.take(pc.take(order, pc.sort_indices(order)))


def in_target_schema(rows: pa.RecordBatch, target: TableSchema, source_names: dict[str, str]) -> pa.RecordBatch:
    """The decoded columns (source names) as a batch of the destination table's columns and types."""
    import pyarrow as pa

    schema = target.arrow_schema()
    arrays = []
    for f in schema:
        column = rows.column(source_names.get(f.name, f.name))
        arrays.append(column if column.type == f.type else column.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def run_until(applier: Applier, done: Callable[[], bool], stop: Callable[[], bool],
              idle_timeout_s: float = 300.0) -> None:
    """Step until ``done()`` (checked when a poll brings nothing) or ``stop()``; fail when nothing moves for
    ``idle_timeout_s`` while not done."""
    last_progress = time.monotonic()
    last_check = 0.0
    while not stop():
        n = applier.step()
        now = time.monotonic()
        if n:
            last_progress = now
        if now - last_check >= (0.5 if n == 0 else 2.0):
            last_check = now
            if n == 0:
                applier.flush()  # nothing new came: let the writer finish what it holds, for done() to see it
            if done():
                break
        if now - last_progress > idle_timeout_s:
            from copyjob.core.errors import ConnectionFailed

            raise ConnectionFailed(f"kafka: no events arrived for {idle_timeout_s:.0f}s while the destination "
                                   "had not caught up (are the topics' partitions held by another member?)")
    applier.flush()  # what was polled is written (and a failed write raised) before the caller reads counts

