"""A failing table fails alone: one change a destination refuses (a value too large for its ``numeric(10,2)``
column) fails that table with its own error, naming the table and the row, while the job's other table keeps
streaming; once the destination is fixed the failed table resumes from its own position, with no new
snapshot, and every table ends equal to its source."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from copyjob.offsets import open_state_store

from copyjob.core.capture import CaptureOptions, LogSource
from copyjob.core.changes import ChangeBatch, ChangeEvent
from copyjob.core.contracts import SnapshotResult, Source
from copyjob.core.errors import DataError
from copyjob.core.plan import TablePlan
from copyjob.core.schema import TableName
from copyjob.jobfile import Job
from copyjob.loader import LoadedJob
from copyjob.progress import Progress
from copyjob.runner import JobRun
from tests.copyjob.test_outages import Stream, job_file
from tests.helpers import copyjob, duckdb_rows, sqlite_script
from tests.pg_cdc import drop_slots, execute, rows, table_fingerprint


@pytest.fixture(autouse=True)
def _slots(pg_url: str) -> Iterator[None]:
    yield
    drop_slots(pg_url)


def statuses(job: Path) -> dict[str, dict[str, Any]]:
    result = copyjob("status", job, "--json")
    assert result.code == 0, result.output
    return {t["table"]: t for t in json.loads(result.stdout)["tables"]}


def equal(src: str, dst: str, table: str) -> bool:
    try:
        return table_fingerprint(src, table) == table_fingerprint(dst, table)
    except Exception:  # not created yet
        return False


def test_a_failing_table_fails_alone_and_resumes_from_its_own_position(tmp_path: Path, pg_url: str,
                                                                     pg_url2: str) -> None:
    execute(pg_url, "CREATE TABLE good (id int PRIMARY KEY, v text)",
            "CREATE TABLE bad (id int PRIMARY KEY, amount numeric)",
            "INSERT INTO good SELECT g, 'v' FROM generate_series(1, 100) g",
            "INSERT INTO bad SELECT g, g * 1.5 FROM generate_series(1, 100) g")
    execute(pg_url2, "CREATE TABLE bad (id int PRIMARY KEY, amount numeric(10,2))")
    job = job_file(tmp_path, pg_url, pg_url2, tables=[{"name": "good"}, {"name": "bad"}])
    stream = Stream(job)
    try:
        stream.until("the snapshot", lambda: equal(pg_url, pg_url2, "good") and equal(pg_url, pg_url2, "bad"))
        execute(pg_url, "BEGIN", "UPDATE bad SET amount = 2 WHERE id = 1",
                "INSERT INTO bad VALUES (101, 123456789012.5)", "COMMIT")
        stream.until("bad failed", lambda: statuses(job)["bad"]["last_outcome"] == "failed")
        execute(pg_url, "INSERT INTO good SELECT g, 'after' FROM generate_series(101, 200) g",
                "UPDATE good SET v = 'changed' WHERE id <= 10", "INSERT INTO bad VALUES (102, 7)")
        stream.until("good streams on", lambda: equal(pg_url, pg_url2, "good"))
        found = statuses(job)
        assert found["good"]["last_outcome"] == "ok" and not found["good"]["last_error"], found
        error = found["bad"]["last_error"]
        assert "bad" in error and "101" in error, error  # its own error: table and row
    finally:
        code = stream.stop()
    assert code == 1, stream.output
    assert rows(pg_url2, "SELECT count(*) FROM bad WHERE id > 100") == [(0,)]  # not past its failed change
    assert rows(pg_url2, "SELECT amount::float FROM bad WHERE id = 1") == [(1.5,)]  # nor its transaction

    # fixed at the destination: the next run resumes bad from its own position, good skips what it holds
    execute(pg_url2, "ALTER TABLE bad ALTER COLUMN amount TYPE numeric")
    execute(pg_url, "INSERT INTO good VALUES (201, 'later')", "INSERT INTO bad VALUES (103, 8)")
    result = copyjob("run", job, "--no-progress")
    assert result.code == 0, result.output
    assert equal(pg_url, pg_url2, "good") and equal(pg_url, pg_url2, "bad")
    runs = json.loads(copyjob("history", job, "--json").stdout)
    bad = next(t for t in runs[0]["tables"] if t["table"] == "bad")
    assert bad["watermark_before"] and bad["rows_read"] < 10, bad  # streamed on: no new snapshot


# ---------------------------------------------------------------- a value the capture cannot read


A, B = TableName("a"), TableName("b")
CHANGES: list[tuple[TableName, ChangeEvent]] = []
UNREADABLE: set[int] = set()
"""Positions whose value the fake capture cannot decode (a DataError naming the table), until fixed."""


class TwoTableCapture:
    """Changes of ``a`` and ``b`` from one shared log (positions {"n": 1, 2, …}), one batch per change."""

    def __init__(self, source: Source, starts: Mapping[TableName, Mapping[str, Any]]) -> None:
        self._schemas = {t: source.reflect(t) for t in starts}
        self._starts = {t: int(p["n"]) for t, p in starts.items()}
        self._sent = min(self._starts.values())
        self.acked: list[Mapping[str, Any]] = []
        self.caught_up_at: float | None = None

    def next_batches(self, timeout_s: float) -> list[ChangeBatch]:
        for n, (table, event) in enumerate(CHANGES, start=1):
            if n <= self._sent:
                continue
            self._sent = n
            if table not in self._starts or n <= self._starts[table]:
                continue
            if n in UNREADABLE:
                raise DataError(f"{table}: cannot convert the value of column v", table=table)
            return [ChangeBatch(table, self._schemas[table], [event], dict(event.position))]
        return []

    def caught_up(self, end: Mapping[str, Any]) -> bool:
        return self._sent >= int(end["n"])

    def ack(self, position: Mapping[str, Any]) -> None:
        self.acked.append(position)

    def close(self) -> None:
        pass


class TwoTableCdc(LogSource):
    where = "fake"
    parallel_snapshot = False
    captures: ClassVar[list[TwoTableCapture]] = []

    def __init__(self, url: Any, name: str, options: CaptureOptions, source: Source, positions: Any = None) -> None:
        self._source = source

    def prepare(self, plans: Sequence[TablePlan]) -> None:
        pass

    def stream_exists(self) -> bool:
        return True

    def snapshot(self, copy: Callable[[Source], int]) -> SnapshotResult:
        position = {"n": len(CHANGES)}
        return SnapshotResult(status="completed", position=position, rows=copy(self._source))

    def current_position(self) -> Mapping[str, Any]:
        return {"n": len(CHANGES)}

    def capture(self, starts: Mapping[TableName, Mapping[str, Any]]) -> TwoTableCapture:
        capture = TwoTableCapture(self._source, starts)
        TwoTableCdc.captures.append(capture)
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


def _change(table: TableName, id_: int, v: str) -> None:
    CHANGES.append((table, ChangeEvent("c", None, {"id": id_, "v": v}, {"n": len(CHANGES) + 1}, 1_700_000_000_000)))


def test_a_value_the_capture_cannot_read_fails_its_table_alone(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from copyjob import ingest

    sqlite_script(tmp_path / "src.db", "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);"
                                       "CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT);"
                                       "INSERT INTO a VALUES (1, 'a1'); INSERT INTO b VALUES (1, 'b1');")
    monkeypatch.setitem(ingest.LOG_SOURCES, "sqlite", f"{__name__}:TwoTableCdc")
    CHANGES.clear()
    UNREADABLE.clear()

    def run() -> dict[str, Any]:
        model = Job.model_validate({
            "job": "fake", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "duckdb:///dst.duckdb"},
            "copy": {"mode": "cdc", "update_method": "merge"}, "tables": [{"name": "a"}, {"name": "b"}]})
        job_run = JobRun(LoadedJob(job=model, path=tmp_path / "job.yaml"),
                         lambda: open_state_store(str(tmp_path / "state.db")), Progress(live=False))
        try:
            return {t.table: t for t in job_run.run().tables}
        finally:
            job_run.close()

    assert all(t.status == "ok" for t in run().values())  # the snapshot, at {"n": 0}
    _change(A, 2, "a2")
    _change(B, 2, "unreadable")
    UNREADABLE.add(2)
    _change(A, 3, "a3")
    second = run()
    assert second["a"].status == "ok" and second["a"].error is None
    assert second["b"].status == "failed" and "b: cannot convert" in (second["b"].error or "")
    assert duckdb_rows(tmp_path / "dst.duckdb", "SELECT id FROM a ORDER BY id") == [(1,), (2,), (3,)]
    # never acknowledged past b's failed change: the source keeps it for the next run
    assert all(int(p["n"]) < 2 for c in TwoTableCdc.captures for p in c.acked)

    UNREADABLE.clear()  # fixed
    third = run()
    assert third["a"].status == third["b"].status == "ok"
    assert third["b"].rows_read == 1 and third["a"].rows_read == 0  # b from its own position, a skips
    assert duckdb_rows(tmp_path / "dst.duckdb", "SELECT id, v FROM b ORDER BY id") == [(1, "b1"), (2, "unreadable")]
