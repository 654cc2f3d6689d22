"""The CDC orchestrator with in-memory source hooks (shaped like the MySQL ones: the snapshot names its position
only after the read, the capture starts each table after its own position, nothing to acknowledge), SQLite as
the snapshot source and DuckDB as the destination."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from copyjob.offsets import open_state_store

from copyjob import ingest
from copyjob.core.capture import CaptureOptions, LogSource
from copyjob.core.changes import ChangeBatch, ChangeEvent, Op
from copyjob.core.contracts import SnapshotResult, Source
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableName, TableSchema
from copyjob.jobfile import Job
from copyjob.loader import LoadedJob
from copyjob.progress import Progress
from copyjob.runner import JobRun
from tests.helpers import duckdb_rows, sqlite_script

T = TableName("t")
LOG: list[ChangeEvent] = []
"""The fake source's change log: positions {"n": 1, 2, …}."""


def change(n: int, op: Op, id_: int, v: str | None = None) -> ChangeEvent:
    image = {"id": id_, "v": v}
    return ChangeEvent(op, image if op == "d" else None, None if op == "d" else image, {"n": n}, 1_700_000_000_000)


class FakeCapture:
    def __init__(self, schema: TableSchema, starts: Mapping[TableName, Mapping[str, Any]]) -> None:
        self._schema = schema
        self._start = min(int(p["n"]) for p in starts.values())
        self._sent = self._start
        self.acked: list[Mapping[str, Any]] = []
        self.caught_up_at: float | None = None

    def next_batches(self, timeout_s: float) -> list[ChangeBatch]:
        events = [e for e in LOG if int(e.position["n"]) > self._sent][:2]  # two per chunk
        if not events:
            return []
        self._sent = int(events[-1].position["n"])
        return [ChangeBatch(T, self._schema, events, dict(events[-1].position))]

    def caught_up(self, end: Mapping[str, Any]) -> bool:
        return self._sent >= int(end["n"])

    def ack(self, position: Mapping[str, Any]) -> None:
        self.acked.append(position)

    def close(self) -> None:
        pass


class FakeCdc(LogSource):
    where = "fake"
    parallel_snapshot = False
    captures: ClassVar[list[FakeCapture]] = []

    def __init__(self, url: Any, name: str, options: CaptureOptions, source: Source, positions: Any = None) -> None:
        self._source = source

    def prepare(self, plans: Sequence[TablePlan]) -> None:
        pass

    def stream_exists(self) -> bool:
        return True

    def snapshot(self, copy: Callable[[Source], int]) -> SnapshotResult:
        position = {"n": len(LOG)}  # like MySQL: known before, handed over after the read
        rows = copy(self._source)
        return SnapshotResult(status="completed", position=position, rows=rows)

    def current_position(self) -> Mapping[str, Any]:
        return {"n": len(LOG)}

    def capture(self, starts: Mapping[TableName, Mapping[str, Any]]) -> FakeCapture:
        capture = FakeCapture(self._source.reflect(T), starts)
        FakeCdc.captures.append(capture)
        return capture

    @staticmethod
    def at_or_before(position: Mapping[str, Any], bound: Mapping[str, Any]) -> bool:
        return int(position["n"]) <= int(bound["n"])

    @staticmethod
    def describe(position: Mapping[str, Any]) -> str:
        return json.dumps(dict(position), sort_keys=True)

    def consumed_past(self, committed: Mapping[TableName, Mapping[str, Any]]) -> dict[TableName, str]:
        return {}

    def close(self) -> None:
        pass


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], list[Any]]]:
    sqlite_script(tmp_path / "src.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
                                       "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c');")
    monkeypatch.setitem(ingest.LOG_SOURCES, "sqlite", f"{__name__}:FakeCdc")
    LOG.clear()
    FakeCdc.captures.clear()

    def run(method: str) -> list[Any]:
        model = Job.model_validate({
            "job": "fake", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "duckdb:///dst.duckdb"},
            "copy": {"mode": "cdc", "update_method": method}, "tables": [{"name": "t"}]})
        loaded = LoadedJob(job=model, path=tmp_path / "job.yaml")
        job_run = JobRun(loaded, lambda: open_state_store(str(tmp_path / "state.db")), Progress(live=False))
        try:
            return job_run.run().tables
        finally:
            job_run.close()

    yield run


def dest(tmp_path: Path, sql: str) -> Sequence[tuple[Any, ...]]:
    return duckdb_rows(tmp_path / "dst.duckdb", sql)


def test_snapshot_with_late_position_then_changes_then_resume(tmp_path: Path, job: Any) -> None:
    LOG.extend([change(1, "c", 9, "before the snapshot")])  # already in the snapshot's past
    (first,) = job("merge")
    assert first.status == "ok" and first.rows_written == 3
    assert first.watermark_after == '{"n": 1}'  # completed by a marker-only commit after the read
    LOG.extend([change(2, "u", 1, "A"), change(3, "d", 2), change(4, "c", 4, "d"), change(5, "u", 4, "D")])
    (second,) = job("merge")
    assert second.status == "ok" and second.rows_read == 4
    assert dest(tmp_path, "SELECT id, v FROM t ORDER BY id") == [(1, "A"), (3, "c"), (4, "D")]
    assert FakeCdc.captures[-1].acked == [{"n": 3}, {"n": 5}]  # after each chunk's commit
    (third,) = job("merge")  # nothing new: nothing applied, nothing twice
    assert third.rows_read == 0 and third.watermark_before == third.watermark_after == '{"n": 5}'


def test_append_writes_every_change_once(tmp_path: Path, job: Any) -> None:
    job("append")
    LOG.extend([change(1, "c", 4, "x"), change(2, "u", 4, "y"), change(3, "d", 4)])
    job("append")
    job("append")
    assert dest(tmp_path, "SELECT id, v, _op FROM t WHERE _op <> 'r' ORDER BY _position") == [
        (4, "x", "c"), (4, "y", "u"), (4, None, "d")]  # a delete carries its before image
    assert dest(tmp_path, "SELECT count(*) FROM t WHERE _op = 'r'") == [(3,)]


def test_a_failing_table_holds_acknowledgements_and_catches_up_later(tmp_path: Path, job: Any) -> None:
    import duckdb

    job("merge")
    con = duckdb.connect(str(tmp_path / "dst.duckdb"))
    con.execute("ALTER TABLE t ADD COLUMN must INTEGER DEFAULT 1")
    con.execute("ALTER TABLE t ALTER COLUMN must DROP DEFAULT")
    con.execute("ALTER TABLE t ALTER COLUMN must SET NOT NULL")  # every load into t fails now
    con.close()
    LOG.extend([change(1, "u", 1, "A"), change(2, "c", 4, "d")])
    (failed,) = job("merge")
    assert failed.status == "failed" and failed.error
    # nothing confirmed past the failed table's position: its changes stay in the source's log
    assert all(int(p["n"]) <= 0 for p in FakeCdc.captures[-1].acked)
    con = duckdb.connect(str(tmp_path / "dst.duckdb"))
    con.execute("ALTER TABLE t DROP COLUMN must")
    con.close()
    (fixed,) = job("merge")
    assert fixed.status == "ok" and fixed.rows_read == 2
    assert dest(tmp_path, "SELECT id, v FROM t ORDER BY id") == [(1, "A"), (2, "b"), (3, "c"), (4, "d")]
