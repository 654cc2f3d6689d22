"""Logical replication against the real test server: the setup checks name their fix, the stream confirms only
what was acknowledged (and resends a half-applied transaction), the exported snapshot meets the stream with no
gap and no overlap, and an idle database still advances the slot."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from copyjob.connectors.postgres._catalog import logical_type
from copyjob.connectors.postgres._connect import connection_params
from copyjob.ingest.postgres_cdc import (
    STOP_PREFIX,
    ExportedSnapshot,
    PgChangeStream,
    PgOutputDecoder,
    ReplicationSetup,
    StreamOptions,
)
from copyjob.ingest.postgres_cdc._replication import ReplicationConnection
from copyjob.ingest.postgres_cdc._types import BUILTIN_TYPES

from copyjob.core.changes import ChangeEvent
from copyjob.core.errors import ConfigurationError
from copyjob.core.schema import LogicalType, TableName
from copyjob.core.urls import parse_url
from tests.pg_cdc import drop_slots, execute, rows
from tests.services.postgres import PostgresServer

T = TableName("t", "public")


def types(oid: int, typmod: int) -> LogicalType:
    return logical_type(BUILTIN_TYPES.get(oid, "text"), typmod)


class Cdc:
    def __init__(self, url: str) -> None:
        self.url = url
        self.params = connection_params(parse_url(url))
        self.name = "s_" + url.rsplit("/", 1)[1]
        self.setup = ReplicationSetup(lambda: psycopg.connect(url, autocommit=True), "test", slot=self.name,
                                      publication=self.name, job="test")

    def stream(self, batch_events: int = 10_000, heartbeat_s: float = 10.0) -> PgChangeStream:
        options = StreamOptions(self.name, self.name, batch_events=batch_events, max_batch_delay_s=0.05,
                                heartbeat_s=heartbeat_s)
        return PgChangeStream(self.params, "test", options, PgOutputDecoder(types, {T: ("id",)}, {T}))

    def confirmed(self) -> int:
        info = self.setup.slot_info()
        assert info is not None and info.confirmed_flush is not None
        return info.confirmed_flush

    def drain(self, stream: PgChangeStream, ack: bool = True) -> list[ChangeEvent]:
        """Every event committed before now."""
        end = {"lsn": self.setup.emit_message(STOP_PREFIX, "test"), "seq": -1}
        events: list[ChangeEvent] = []
        deadline = time.monotonic() + 30
        while not stream.caught_up(end):
            assert time.monotonic() < deadline, "the stream did not reach its stop point"
            for batch in stream.next_batches(0.2):
                events.extend(batch.events)
                if ack:
                    stream.ack(batch.position)
        return events


@pytest.fixture
def cdc(pg_url: str) -> Iterator[Cdc]:
    execute(pg_url, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    c = Cdc(pg_url)
    c.setup.ensure_publication([T], create=True)
    try:
        yield c
    finally:
        c.setup.close()
        drop_slots(pg_url)


def ids(events: list[ChangeEvent]) -> list[int]:
    return [e.after["id"] for e in events if e.after is not None]


# ---------------------------------------------------------------- setup


def test_setup_errors_name_what_to_do(pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE nokey (v int)", "CREATE TABLE t (id int PRIMARY KEY, k int)",
            "CREATE TABLE other (id int PRIMARY KEY)", "CREATE PUBLICATION theirs FOR TABLE other")
    role = "r_" + pg_url.rsplit("/", 1)[1]
    execute(pg_url, f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        setup = ReplicationSetup(lambda: psycopg.connect(pg_url, autocommit=True), "db", slot="x",
                                 publication="mine", job="j")
        with pytest.raises(ConfigurationError, match="REPLICA IDENTITY FULL"):
            setup.check_identity(TableName("nokey", "public"), ())
        with pytest.raises(ConfigurationError, match="carry only its replica identity"):
            setup.check_identity(TableName("t", "public"), ("k",))
        with pytest.raises(ConfigurationError, match=re.escape("CREATE PUBLICATION mine FOR TABLE public.t")):
            setup.ensure_publication([T], create=False)
        theirs = ReplicationSetup(lambda: psycopg.connect(pg_url, autocommit=True), "db", slot="x",
                                  publication="theirs", job="j")
        with pytest.raises(ConfigurationError, match=re.escape("ALTER PUBLICATION theirs ADD TABLE public.t")):
            theirs.ensure_publication([T], create=True)  # not ours: never changed behind the DBA's back
        assert setup.ensure_publication([T], create=True) == [T]
        assert setup.publication_tables() == (False, True, {T}, "created by copyjob for job j")
        weak = pg_url.replace("postgres:postgres@", f"{role}:pw@")
        limited = ReplicationSetup(lambda: psycopg.connect(weak, autocommit=True), "db", slot="x",
                                   publication="mine", job="j")
        with pytest.raises(ConfigurationError, match=f"role {role} lacks REPLICATION"):
            limited.check_server()
        with pytest.raises(ConfigurationError, match=f"role {role} lacks REPLICATION"):
            ReplicationConnection(connection_params(parse_url(weak)), "db")
        for s in (setup, theirs, limited):
            s.close()
    finally:
        execute(pg_url, f"DROP OWNED BY {role}", f"DROP ROLE {role}")


def test_wal_level_replica_is_named(replica_only: PostgresServer) -> None:
    setup = ReplicationSetup(lambda: psycopg.connect(replica_only.url(), autocommit=True), "db", slot="x",
                             publication="p", job="j")
    with pytest.raises(ConfigurationError, match=re.escape("wal_level is replica; set wal_level = logical in "
                                                           "postgresql.conf and restart")):
        setup.check_server()
    setup.close()


# ---------------------------------------------------------------- stream


def test_only_acknowledged_positions_are_confirmed(cdc: Cdc) -> None:
    ExportedSnapshot(cdc.params, "test", cdc.name, temporary=False).close()
    start = cdc.confirmed()
    execute(cdc.url, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 3) g",
            "INSERT INTO t SELECT g, 'b' FROM generate_series(100, 1099) g")  # 1,000 rows: ten chunks of 100
    stream = cdc.stream(batch_events=100)
    assert len(ids(cdc.drain(stream, ack=False))) == 1003
    stream.close()
    assert cdc.confirmed() == start  # nothing acknowledged, nothing released

    stream = cdc.stream(batch_events=100)
    seen: list[ChangeEvent] = []
    while len(seen) < 403:  # the small transaction and four chunks of the big one
        for batch in stream.next_batches(1.0):
            seen.extend(batch.events)
            stream.ack(batch.position)
    stream.close()
    big_commit = seen[-1].position["lsn"]
    assert cdc.confirmed() == big_commit  # inside the big transaction: confirmed up to its commit LSN only

    stream = cdc.stream(batch_events=100)
    again = cdc.drain(stream)
    stream.close()
    assert ids(again) == list(range(100, 1100))  # the big transaction again, whole; the small one not
    assert again[0].position == {"lsn": big_commit, "seq": 0}
    assert cdc.confirmed() > big_commit


def test_chunks_waiting_in_the_queue_are_handed_out_together(cdc: Cdc) -> None:
    """A consumer that fell behind gets every chunk already cut in one call (``queue_chunks`` at most), so it
    commits them at once (Kafka: one producer flush); acknowledging the last position releases them all."""
    ExportedSnapshot(cdc.params, "test", cdc.name, temporary=False).close()
    execute(cdc.url, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 1000) g")  # ten chunks of 100
    stream = cdc.stream(batch_events=100)
    try:
        deadline = time.monotonic() + 120
        while stream.waiting_chunks < 4:  # the queue is full: the reader waits for the consumer
            assert time.monotonic() < deadline, f"only {stream.waiting_chunks} chunks were cut"
            time.sleep(0.05)
        batches = stream.next_batches(1.0)
        assert ids([e for b in batches for e in b.events]) == list(range(1, 401))
        stream.ack(batches[-1].position)
        rest = cdc.drain(stream)
    finally:
        stream.close()
    assert ids(rest) == list(range(401, 1001))
    assert cdc.confirmed() > batches[-1].position["lsn"]


def test_exported_snapshot_meets_the_stream_without_gap_or_overlap(cdc: Cdc) -> None:
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(cdc.url, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                conn.execute("INSERT INTO t VALUES (%s, 'w')", (i,))
                if i % 3 == 0:
                    conn.execute("DELETE FROM t WHERE id = %s", (i - 1,))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        with ExportedSnapshot(cdc.params, "test", cdc.name, temporary=False) as exported, \
                psycopg.connect(cdc.url, autocommit=True) as reader:
            reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            reader.execute(f"SET TRANSACTION SNAPSHOT '{exported.snapshot_name}'")
            time.sleep(0.3)  # the writer goes on; the snapshot must not see it
            snapshot = {r[0] for r in reader.execute("SELECT id FROM t").fetchall()}
            reader.execute("COMMIT")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    stream = cdc.stream()
    replayed = dict.fromkeys(snapshot, True)
    for event in cdc.drain(stream):
        row = event.row
        assert row is not None
        if event.op == "d":
            assert replayed.pop(row["id"])  # deleted once, and it existed
        else:
            assert row["id"] not in replayed  # never inserted twice: no overlap
            replayed[row["id"]] = True
    stream.close()
    assert set(replayed) == {r[0] for r in rows(cdc.url, "SELECT id FROM t")}  # no gap


def test_idle_database_still_advances_the_slot(cdc: Cdc, pg_url2: str) -> None:
    ExportedSnapshot(cdc.params, "test", cdc.name, temporary=False).close()
    before = cdc.confirmed()
    stream = cdc.stream(heartbeat_s=0.2)
    try:
        execute(pg_url2, "CREATE TABLE busy (v text)", "INSERT INTO busy SELECT repeat('x', 100) "
                "FROM generate_series(1, 20000)")  # WAL of another database
        target = rows(cdc.url, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")[0][0]
        deadline = time.monotonic() + 15
        while cdc.confirmed() < target and time.monotonic() < deadline:
            assert stream.next_batches(0.2) == []
        assert cdc.confirmed() >= target > before
        assert stream.caught_up_at is not None
    finally:
        stream.close()


class _PausingServer:
    """A replication connection whose server pauses in the middle of sending a transaction (as a busy walsender
    does): ``frames`` until ``pause_after``, then nothing for ``pause_waits`` waits, then the rest."""

    def __init__(self, frames: list[bytes], pause_after: int, pause_waits: int) -> None:
        self.frames, self.pause_after, self.pause_waits = frames, pause_after, pause_waits
        self.sent = 0

    def read(self) -> bytes | None:
        if (self.sent == self.pause_after and self.pause_waits > 0) or self.sent == len(self.frames):
            return None
        self.sent += 1
        return self.frames[self.sent - 1]

    def wait(self, timeout_s: float) -> None:
        if self.sent == self.pause_after and self.pause_waits > 0:
            self.pause_waits -= 1
        time.sleep(timeout_s)  # the server's silence, not a synchronisation: each wait is one more pause step

    def send_status(self, write_lsn: int, flush_lsn: int, *, reply: bool = False) -> None:
        pass

    def end_copy(self) -> None:
        pass

    def close(self) -> None:
        pass


def _pgoutput_transaction() -> list[bytes]:
    """XLogData frames: a relation (id int8, v text), then one transaction of two inserts."""
    import struct

    def xlog(message: bytes) -> bytes:
        return b"w" + bytes(24) + message

    def column(text: bytes) -> bytes:
        return b"t" + struct.pack(">I", len(text)) + text

    relation = (b"R" + struct.pack(">I", 1) + b"public\0t\0d" + struct.pack(">H", 2)
                + b"\x01id\0" + struct.pack(">Ii", 20, -1) + b"\x00v\0" + struct.pack(">Ii", 25, -1))
    insert = [b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">H", 2) + column(str(i).encode()) + column(b"x")
              for i in (1, 2)]
    return [xlog(relation), xlog(b"B" + struct.pack(">Qqi", 1000, 0, 7)), xlog(insert[0]), xlog(insert[1]),
            xlog(b"C" + struct.pack(">BQQq", 0, 1000, 1010, 0))]


def test_a_server_pausing_inside_a_transaction_does_not_split_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """pgoutput sends a transaction only once it committed: a pause in the middle of one (longer than
    max_batch_delay) is the server being slow, and the chunk waits for its commit instead of ending there, so a
    transaction is never published as two (Debezium's transaction metadata would END it twice)."""
    import copyjob.ingest.postgres_cdc.stream as stream_module

    server = _PausingServer(_pgoutput_transaction(), pause_after=3, pause_waits=6)  # after the first insert
    monkeypatch.setattr(stream_module, "_start", lambda params, where, options: server)
    options = StreamOptions("s", "p", max_batch_delay_s=0.05)
    stream = PgChangeStream({}, "test", options, PgOutputDecoder(types, {T: ("id",)}, {T}))
    try:
        chunks: list[list[int]] = []
        deadline = time.monotonic() + 60
        while sum(map(len, chunks)) < 2:
            assert time.monotonic() < deadline, f"chunks so far: {chunks}"
            batches = stream.next_batches(0.2)
            if batches:
                chunks.append(ids([e for b in batches for e in b.events]))
    finally:
        stream.close()
    assert chunks == [[1, 2]]
