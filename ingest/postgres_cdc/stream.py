"""Streaming a replication slot as change batches (:class:`copyjob.core.contracts.ChangeCapture`).

A reader thread owns the replication connection: it decodes pgoutput messages, cuts them into *chunks* and
hands each chunk (one :class:`ChangeBatch` per table, in stream order) to :meth:`PgChangeStream.next_batches`
through a small queue, so decoding overlaps the destination's writes and memory stays bounded. A chunk ends
at ``batch_events`` events (also inside a big transaction), at a transaction end once ``max_batch_delay`` has
passed since its first event (or later, when the stream is idle), when a table's columns change (a new Relation
message), or at the stop marker. :meth:`PgChangeStream.next_batches` hands out the chunks waiting in the queue
together.

Acknowledgement, in this order:
1. the consumer commits a chunk's batches downstream (destination or broker);
2. it calls :meth:`PgChangeStream.ack` with the chunk's position;
3. the reader sends the flushed LSN to the server (a standby status update): the end of the last fully
   acknowledged transaction, or, for a chunk that ends inside a transaction, that transaction's commit LSN,
   so the server sends the transaction again after a restart and the consumer skips what it applied;
4. once everything handed out is acknowledged and no transaction is open, the server's keepalive position
   is confirmed as well (releases WAL of other tables and databases); every ``heartbeat`` the reader asks the
   server for a keepalive, so an idle database still advances the slot.

A bounded run (``copyjob run``) first emits a logical decoding message ``copyjob.stop`` (non-transactional,
so it sits in the stream at its LSN: every transaction committed before it comes before it). When the reader
meets such a message it ends the chunk and queues a mark behind it; once :meth:`PgChangeStream.next_batches`
has handed out that mark, :meth:`PgChangeStream.caught_up` is true for every end at or before its LSN.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from copyjob.ingest.postgres_cdc._replication import KEEPALIVE, XLOGDATA_HEADER, ReplicationConnection, format_lsn
from copyjob.ingest.postgres_cdc.pgoutput import PgOutputDecoder

from copyjob.core.changes import ChangeBatch
from copyjob.core.errors import CopyjobError

log = logging.getLogger(__name__)
STOP_PREFIX = "copyjob.stop"
RECORD_EVERY_S = 1.0
"""How often at most the confirmed position is recorded (and so confirmed) while it moves."""
_CHANGES = frozenset(map(ord, "IUDT"))
_W, _K = ord("w"), ord("k")


@dataclass(frozen=True)
class StreamOptions:
    slot: str
    publication: str
    batch_events: int = 10_000
    max_batch_delay_s: float = 0.2
    heartbeat_s: float = 10.0
    queue_chunks: int = 4
    before_confirm: Callable[[int], None] | None = None
    """Called with a flush LSN before the server is told it: the job records where it confirmed the slot, so a
    later run sees when another process confirmed it further (its changes in between are gone)."""


@dataclass(frozen=True)
class _Chunk:
    batches: list[ChangeBatch]
    key: tuple[int, int]
    flush: int


@dataclass(frozen=True)
class _Reached:
    lsn: int


_FAILED = object()


class PgChangeStream:
    """Reads the slot from its confirmed position (the server resumes there)."""

    def __init__(self, params: Mapping[str, Any], where: str, options: StreamOptions,
                 decoder: PgOutputDecoder) -> None:
        self._options = options
        self._decoder = decoder
        self._conn = _start(params, where, options)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=options.queue_chunks)
        self._lock = threading.Lock()
        self._handed: deque[tuple[tuple[int, int], int]] = deque()
        """(position, flush LSN) of each chunk handed out and not yet acknowledged."""
        self._flush = 0
        self._flush_sent = -1
        self._recorded = 0
        self._record_due = 0.0
        self._server_end = 0
        self._received = 0
        self._chunk_started: float | None = None
        self._reached = 0
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self.caught_up_at: float | None = None
        """Wall-clock time when everything the server had sent was last confirmed (for lag in seconds)."""
        self._thread = threading.Thread(target=self._read_loop, name="pg-cdc-reader", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ consumer side (ChangeCapture)

    def next_batches(self, timeout_s: float) -> list[ChangeBatch]:
        """The next chunk, with the chunks already queued behind it (``queue_chunks`` at most): a consumer that
        fell behind commits them at once (Kafka: one producer flush, one broker round trip) instead of one by
        one, while a consumer that keeps up still gets each chunk as soon as it is cut."""
        try:
            item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            self._raise_failure()
            return []
        batches: list[ChangeBatch] = []
        taken = 0
        while True:
            if isinstance(item, _Reached):  # the stop point: caught up once what came before is handed out
                self._reached = max(self._reached, item.lsn)
                break
            if item is _FAILED:
                if not batches:
                    self._raise_failure()
                break  # raised by the next call (the error stays)
            assert isinstance(item, _Chunk)
            batches += item.batches
            taken += 1
            if taken >= self._options.queue_chunks:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return batches

    def caught_up(self, end: Mapping[str, Any]) -> bool:
        """Every transaction committed before ``end`` (from a ``copyjob.stop`` message) was handed out."""
        return self._reached >= int(end["lsn"])

    def ack(self, position: Mapping[str, Any]) -> None:
        """Everything up to ``position`` (a chunk's position) is durable downstream (step 2)."""
        key = (int(position["lsn"]), int(position["seq"]))
        with self._lock:
            while self._handed and self._handed[0][0] <= key:
                self._flush = max(self._flush, self._handed.popleft()[1])

    def close(self) -> None:
        """Stop the reader; it sends the last flushed position before closing the connection."""
        self._closing.set()
        self._thread.join(timeout=30)

    @property
    def flushed_lsn(self) -> int:
        return self._flush

    @property
    def waiting_chunks(self) -> int:
        """Chunks cut and not yet handed out (``queue_chunks`` at most: then the reader waits)."""
        return self._queue.qsize()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    # ------------------------------------------------------------ reader thread

    def _read_loop(self) -> None:
        conn = self._conn
        next_status = 0.0
        try:
            while not self._closing.is_set():
                frame = conn.read()
                if frame is None:
                    now = time.monotonic()
                    # not inside a transaction: pgoutput (protocol 1) sends one only once it committed, so a pause
                    # there is the server being slow, its commit follows, and a chunk cut there would split it
                    # (Debezium's transaction metadata would END it twice)
                    if self._chunk_started is not None and not self._decoder.in_transaction \
                            and now - self._chunk_started >= self._delay():
                        self._end_chunk()
                    next_status = self._status(now, next_status)
                    conn.wait(0.05)
                    continue
                kind = frame[0]
                if kind == _W:
                    self._on_data(frame)
                elif kind == _K:
                    wal_end, _, reply = KEEPALIVE(frame, 1)
                    self._server_end = max(self._server_end, wal_end)
                    if reply:
                        next_status = 0.0
                if next_status == 0.0 or (self._flush != self._flush_sent
                                          and time.monotonic() >= self._record_due):  # cheap: runs per message
                    next_status = self._status(time.monotonic(), next_status)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._error = exc
            self._put(_FAILED)
        finally:
            try:
                if self._error is None:
                    self._status(time.monotonic(), 0.0, final=True)
                    conn.end_copy()
            except Exception:
                pass  # closing anyway: the server keeps the last position it was told
            conn.close()

    def _delay(self) -> float:
        return self._options.max_batch_delay_s

    def _on_data(self, frame: bytes) -> None:
        decoder = self._decoder
        kind = decoder.decode(frame[XLOGDATA_HEADER:])
        if kind in _CHANGES:
            if self._chunk_started is None and decoder.pending_count:
                self._chunk_started = time.monotonic()
            if decoder.pending_count >= self._options.batch_events:
                self._end_chunk()
        elif kind == 67:  # 'C'
            self._received = max(self._received, decoder.end_lsn)
            if self._chunk_started is not None and (
                    decoder.pending_count >= self._options.batch_events
                    or time.monotonic() - self._chunk_started >= self._delay()):
                self._end_chunk()
        elif kind == 82 and decoder.schema_changed:  # 'R' changing a table with pending events
            self._end_chunk()
        elif kind == 77:  # 'M'
            self._on_message()

    def _on_message(self) -> None:
        assert self._decoder.message is not None
        prefix, _, lsn = self._decoder.message
        if prefix == STOP_PREFIX:
            self._server_end = max(self._server_end, lsn)  # like a keepalive: everything before it was sent
            self._end_chunk()
            log.debug("stream passed a stop point at %s", format_lsn(lsn))
            self._put(_Reached(lsn))

    def _end_chunk(self) -> None:
        """Hand the pending events out as one chunk."""
        decoder = self._decoder
        self._chunk_started = None
        groups = decoder.take()
        if not groups:
            return
        lsn, seq = decoder.last
        position = {"lsn": lsn, "seq": seq}
        # inside a transaction: confirm only up to its commit LSN, so the server sends it again after a restart
        flush = lsn if decoder.inside_last_change_transaction else decoder.end_lsn
        chunk = _Chunk([ChangeBatch(rel.table, rel.schema, events, position) for rel, events in groups],
                       decoder.last, flush)
        with self._lock:
            self._handed.append((chunk.key, chunk.flush))
        self._put(chunk)

    def _put(self, item: object) -> None:
        """Queue ``item``; while the consumer is busy keep telling the server we are alive."""
        next_status = 0.0
        while not self._closing.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._error is None:
                    next_status = self._status(time.monotonic(), next_status)

    def _status(self, now: float, due: float, *, final: bool = False) -> float:
        """Send a status update when the flushed LSN moved or when ``due``; returns the next due time
        (step 3, and step 4's idle confirmation)."""
        self._advance_when_idle()
        flush = self._flush
        if flush > self._recorded and self._options.before_confirm is not None:
            if final or now >= self._record_due:
                self._options.before_confirm(flush)  # recorded first: a failure here confirms nothing
                self._recorded, self._record_due = flush, now + RECORD_EVERY_S
            else:  # confirm what is recorded; the rest with the next record (a store write is not free)
                flush = max(self._recorded, self._flush_sent)
        if flush == self._flush_sent and now < due:
            return due
        write = max(flush, self._received)
        self._conn.send_status(write, flush, reply=now >= due)
        self._flush_sent = flush
        return now + min(self._options.heartbeat_s, 10.0)

    def _advance_when_idle(self) -> None:
        decoder = self._decoder
        if decoder.in_transaction or decoder.pending_count:
            return
        with self._lock:
            if self._handed:
                return
            end = max(decoder.end_lsn, self._server_end)
            if end > self._flush:
                self._flush = end
            self.caught_up_at = time.time()


def _start(params: Mapping[str, Any], where: str, options: StreamOptions) -> ReplicationConnection:
    """START_REPLICATION; while the slot is still held by the WAL sender of a process that just died (it notices
    within moments), try again for a while."""
    deadline = time.monotonic() + 15
    while True:
        conn = ReplicationConnection(params, where)
        try:
            conn.start(options.slot, 0, {"proto_version": "1", "publication_names": options.publication,
                                         "messages": "true"})
            return conn
        except CopyjobError as exc:
            conn.close()
            if not (exc.retriable and "is active for PID" in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        except BaseException:
            conn.close()
            raise
