"""``mode: cdc`` with ``transport: kafka``: the CDC sink that publishes to the tables' topics (:class:`KafkaSink`).

:class:`KafkaSink` is the CDC orchestrator's sink on the capture side. There is no destination there, so a
table's position lives in the state store (``cdc_position``, with ``committed_run_id``). The capture commit of
a chunk (steps in this order):

1. publish every change after the table's position onto ``<prefix>.<schema>.<table>`` as a Debezium-style
   event (``c``/``u``/``d`` with their source positions; a delete is followed by a tombstone);
2. flush: wait until the broker acknowledged every event (the producer is idempotent, acks=all);
3. only then move the tables' positions (``commit``), and the orchestrator saves them in the state store;
4. only then the position is acknowledged to the source (PostgreSQL: the flushed LSN is confirmed).

A crash before 3 publishes the same changes again after the restart: merge applies them idempotently, and
under append the repeated events carry the same ``_position``. A snapshot publishes every row as ``op: r``,
flushes, and then the table's position is the snapshot's point.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from copyjob.apply.cdc_table import CdcTable, Order, Position, ProgressCallback, logged_columns, split_key_changes
from copyjob.connectors.kafka import source_info, topic_of
from copyjob.connectors.kafka.change_encode import encode_changes
from copyjob.connectors.kafka.codec import UNCHANGED_HEADER, Encoder, SourceInfo, TableEncoder, now_ms
from copyjob.connectors.kafka.sizes import MessageTooLarge, too_large
from copyjob.offsets.ledger import EPOCH_KEY, Ledger
from copyjob.snapshot import read_table

from copyjob.core.changes import UNCHANGED_TOAST, ChangeBatch, ChangeEvent, ColumnarInserts, op_counts
from copyjob.core.contracts import Source
from copyjob.core.errors import ConfigurationError
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableName
from copyjob.core.transport import Publisher, Transport
from copyjob.core.urls import ConnectionUrl

if TYPE_CHECKING:
    import pyarrow as pa


class KafkaSink:
    """Publishes a CDC run's snapshot rows and changes; positions move only after the broker's ack."""

    positions_in_store = True

    def __init__(self, source_url: ConnectionUrl, transport: Transport, encoder: Encoder, *, prefix: str,
                 batch_rows: int, one_partition: bool, publisher: Publisher | None = None) -> None:
        """``prefix``: of the topics; ``one_partition``: the topics have one partition each (a source's
        TRUNCATE can then be published in order)."""
        self.source_url = source_url
        self.transport = transport
        self.prefix = prefix
        self.one_partition = one_partition
        self.batch_rows = batch_rows
        self.encoder = encoder
        self.publisher = publisher or transport.publisher()
        self._published: dict[CdcTable, Position] = {}
        """Tables whose changes were published up to this position, not yet acknowledged by the broker."""
        self._topics: set[str] = set()

    def _topic(self, plan: TablePlan) -> tuple[str, SourceInfo, tuple[str, ...]]:
        info = source_info(self.source_url, TableName.parse(plan.table.name))
        topic = topic_of(self.prefix, info)
        key = tuple(plan.table.key or plan.source_schema.primary_key)
        if topic not in self._topics:
            wanted = {topic: bool(key)}
            if self.encoder.transactions is not None:
                wanted[self.encoder.transaction_topic] = False
            self.transport.ensure_topics(wanted)
            self._topics.add(topic)
        return topic, info, key

    def reconcile(self, ledger: Ledger, plan: TablePlan) -> CdcTable:
        """The position saved in the state store after the broker's ack, unless a reset came after it."""
        state, redefined = ledger.load_defined(plan.state_key, plan.table.definition)
        saved = state.extra.get("cdc_position")
        committed: Position | None = saved if saved and not state.needs_full else None
        self.encoder.epochs[self._topic(plan)[0]] = state.extra.get(EPOCH_KEY, "")
        return CdcTable(plan=plan, state=state, committed=committed, resnapshot=committed is None and bool(saved),
                        before=committed, source_columns=logged_columns(plan.source_schema),
                        redefined=redefined, note=redefined)

    def write_snapshot(self, t: CdcTable, source: Source, position: Position | None, *, run_id: str,
                       parallel: int, progress: ProgressCallback, stop: Callable[[], bool]) -> int:
        """Every row as ``op: r`` at the snapshot's point, flushed; then the table's position is that point."""
        topic, info, key = self._topic(t.plan)
        self.encoder.epochs[topic] = t.state.extra.get(EPOCH_KEY, "")  # a new one after a lost stream (ledger)
        encoder = self.encoder.for_table(topic, t.plan.source_schema, key)
        published = 0
        for batch, last in _with_last(read_table(source, t.plan.source_schema, (), self.batch_rows, parallel)):
            if stop():
                raise InterruptedError(f"{t.plan.label}: snapshot stopped")
            keys, values = encoder.encode_batch(batch, "r", info, dict(position or {}), last=last)
            try:
                self.publisher.publish_many(topic, keys, values, encoder.headers)
            except MessageTooLarge as exc:
                raise too_large(exc, t.plan.label, batch, key) from exc
            published += len(values)
            progress(batch.num_rows)
        self.publisher.flush()
        t.snapshot_done(published, published, position)
        return published

    def complete_snapshot(self, t: CdcTable, position: Position, *, run_id: str) -> None:
        t.committed = position

    def apply(self, t: CdcTable, batch: ChangeBatch, *, at_or_before: Order, run_id: str) -> None:
        """1. of the capture commit: publish the changes after the table's position (and after what this
        chunk already published)."""
        done = self._published.get(t, t.committed)
        events = batch.events  # in source order: when the first is past the position, all are
        if done is not None and events and at_or_before(events[0].position, done):
            events = [e for e in events if not at_or_before(e.position, done)]
        t.rows_read += len(events)
        if events:
            if not self.one_partition and "t" in op_counts(events):
                raise ConfigurationError(
                    f"{t.plan.label}: a TRUNCATE at the source cannot be published in order on topics with "
                    "several partitions; copyjob reset --table re-snapshots the table (or use kafka.partitions: "
                    "1 for new topics)")
            topic, info, key = self._topic(t.plan)
            events = split_key_changes(events, key)
            # the log's schema lacks NOT NULL and declared types (PostgreSQL's relation messages): the catalog's,
            # so the changes' schema is the snapshot's (one schema version, NOT NULL kept for the apply side)
            schema = batch.schema.with_catalog(t.plan.source_schema)
            t.rows_written += publish_batch(self.encoder, self.publisher, topic,
                                            ChangeBatch(batch.table, schema, events, batch.position), info, key)
        if done is None or not at_or_before(batch.position, done):
            self._published[t] = batch.position

    def takes_columns(self, plans: Sequence[TablePlan]) -> bool:
        return self.encoder.format == "avro"  # encoded from Arrow columns (connectors.kafka.change_encode)

    def commit(self) -> None:
        """2./3. of the capture commit: wait for the broker, then move the positions."""
        published, self._published = self._published, {}  # a failed flush forgets them: they never count
        if not published:
            return
        transactions = self.encoder.transactions
        if transactions is not None:  # the END of the chunk's last transaction (connectors.kafka.debezium)
            for key, value in transactions.close():
                self.publisher.publish(self.encoder.transaction_topic, key, value)
        self.publisher.flush()
        for t, position in published.items():
            t.committed = position

    @contextmanager
    def background(self) -> Iterator[KafkaSink]:
        """The same producer (thread-safe) and encoder; the snapshot flushes before its position moves."""
        yield KafkaSink(self.source_url, self.transport, self.encoder, prefix=self.prefix,
                        batch_rows=self.batch_rows, one_partition=self.one_partition, publisher=self.publisher)


TRUNCATE_HEADER = ("copyjob.op", b"truncate")
"""On a truncate event (``op: t``, no images, a key whose columns are all null), for consumers that know only
Debezium's c/u/d/r."""


def _unchanged_header(event: ChangeEvent) -> list[tuple[str, bytes]]:
    after = event.after
    if after is None or UNCHANGED_TOAST not in after.values():
        return []
    return [(UNCHANGED_HEADER, json.dumps([c for c, v in after.items() if v is UNCHANGED_TOAST]).encode())]


def publish_batch(encoder: Encoder, publisher: Publisher, topic: str, batch: ChangeBatch, info: SourceInfo,
                  key: tuple[str, ...]) -> int:
    """Publish a change batch from a log-based capture (:class:`KafkaSink`): deletes are followed by a
    tombstone, a truncate is an ``op: t`` event with the header :data:`TRUNCATE_HEADER`. The
    caller flushes and then acknowledges ``batch.position`` to the capture. An update that left values out
    (unchanged TOASTed values) names them in the header ``copyjob.unchanged`` (connectors.kafka.codec)."""
    enc = encoder.for_table(topic, batch.schema, key)
    encoded = encode_changes(enc, batch.events, info, now_ms())  # the whole batch at once, or None
    if encoded is not None:
        _publish_encoded(enc, publisher, topic, batch.events, *encoded)
        return len(batch.events)
    transactions, collection = encoder.transactions, f"{info.schema}.{info.table}"
    for event in batch.events:
        block = None
        if transactions is not None:  # Debezium's BEGIN/END records and the event's transaction block
            records, block = transactions.event(collection, event.position, event.ts_ms)
            for tx_key, tx_value in records:
                publisher.publish(encoder.transaction_topic, tx_key, tx_value)
        if event.op == "t":
            # keyed (every key column null): compacted topics refuse keyless messages
            publisher.publish(topic, enc.encode_key({}, truncate=True), enc.encode_value(event, info, block),
                              [*enc.headers, TRUNCATE_HEADER])
            continue
        row_key = enc.encode_key(event.row)
        extra = _unchanged_header(event) if event.op == "u" else []
        publisher.publish(topic, row_key, enc.encode_value(event, info, block), [*enc.headers, *extra] if extra
                          else enc.headers)
        if event.op == "d" and row_key is not None:
            publisher.publish(topic, row_key, None, enc.headers)
    return len(batch.events)


def _publish_encoded(enc: TableEncoder, publisher: Publisher, topic: str, events: Sequence[ChangeEvent],
                     keys: list[bytes | None], values: list[bytes]) -> None:
    """:func:`publish_batch` of messages encoded beforehand: runs of messages with the table's headers go out in
    one call; a truncate and an update with unchanged values, which carry headers of their own, one by one."""
    if isinstance(events, ColumnarInserts):  # inserts only: no tombstone, no header of their own
        publisher.publish_many(topic, keys, values, enc.headers)
        return
    run_keys: list[bytes | None] = []
    run_values: list[bytes | None] = []
    for event, row_key, value in zip(events, keys, values, strict=True):
        extra = [TRUNCATE_HEADER] if event.op == "t" else (_unchanged_header(event) if event.op == "u" else [])
        if extra:
            if run_values:
                publisher.publish_many(topic, run_keys, run_values, enc.headers)
                run_keys, run_values = [], []
            publisher.publish(topic, row_key, value, [*enc.headers, *extra])
            continue
        run_keys.append(row_key)
        run_values.append(value)
        if event.op == "d" and row_key is not None:
            run_keys.append(row_key)
            run_values.append(None)  # the tombstone
    if run_values:
        publisher.publish_many(topic, run_keys, run_values, enc.headers)


def _with_last(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[pa.RecordBatch, bool]]:
    """Each batch and whether it is the last (one batch read ahead)."""
    previous = None
    for batch in batches:
        if previous is not None:
            yield previous, False
        previous = batch
    if previous is not None:
        yield previous, True
