"""The state store against SQLite files and, when the ``pg_url`` fixture can start a server, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from copyjob.offsets import SqlStateStore, default_state_url, open_state_store
from copyjob.offsets.schema import SCHEMA_VERSION, meta
from sqlalchemy import event, text, update

from copyjob import offsets
from copyjob.core.contracts import RunRecord, TableRunRecord, TableState
from copyjob.core.errors import ConfigurationError, StateError

UTC = dt.UTC
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path.as_posix()}/state.db"


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStateStore]:
    with open_state_store(store_url) as opened:
        yield opened


class Boom(RuntimeError):
    pass


def fail_after(store: SqlStateStore, sql_start: str) -> None:
    """Make the first statement starting with ``sql_start`` raise after it ran (a crash mid-transaction)."""

    def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(sql_start):
            event.remove(store.engine, "after_cursor_execute", _after)
            raise Boom(statement)

    event.listen(store.engine, "after_cursor_execute", _after)


# ---------------------------------------------------------------- the package


def test_public_api_is_pinned() -> None:
    assert sorted(offsets.__all__) == [
        "LockInfo", "RunLock", "SqlStateStore", "default_state_url", "open_state_store",
    ]
    for name in offsets.__all__:
        assert getattr(offsets, name) is not None


def test_importing_offsets_does_not_import_sqlalchemy() -> None:
    code = "import sys; from copyjob import offsets; offsets.default_state_url; assert 'sqlalchemy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_default_state_url_is_next_to_the_job_and_created_on_open(tmp_path: Path) -> None:
    job_file = tmp_path / "jobs" / "shop.yaml"
    url = default_state_url(job_file)
    assert url == f"sqlite:///{(tmp_path / 'jobs' / '.copyjob' / 'state.db').as_posix()}"
    open_state_store(url).close()
    assert (tmp_path / "jobs" / ".copyjob" / "state.db").is_file()
    assert (tmp_path / "jobs" / ".copyjob" / ".gitignore").read_text() == "*\n"


def test_bare_path_and_relative_url_are_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_state_store(str(tmp_path / "bare.db")) as store:
        store.save("j", TableState(table="t", watermark=1))
    with open_state_store(f"sqlite:///{tmp_path.as_posix()}/bare.db") as store:
        assert store.load("j", "t").watermark == 1
    monkeypatch.chdir(tmp_path)
    open_state_store("sqlite:///relative.db").close()
    assert (tmp_path / "relative.db").is_file()


def test_unsupported_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"mysql://u:\*\*\*@h/db"):
        open_state_store("mysql://u:secret@h/db")


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    with open_state_store(str(tmp_path / "s.db")) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


# ---------------------------------------------------------------- table state

WATERMARKS = [
    pytest.param(42, id="int"),
    pytest.param(2**62, id="bigint"),
    pytest.param(Decimal("12345678901234567890.000123"), id="decimal"),
    pytest.param(dt.datetime(2024, 5, 1, 12, 30, 45, 123456), id="naive-datetime"),
    pytest.param(dt.datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC), id="utc-datetime"),
    pytest.param(dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), id="offset-dt"),
    pytest.param(dt.date(2024, 2, 29), id="date"),
    pytest.param("2024-05-01/ä", id="str"),
    pytest.param(1.5, id="float"),
]


@pytest.mark.parametrize("watermark", WATERMARKS)
def test_watermark_round_trips_with_its_type(store: SqlStateStore, watermark: Any) -> None:
    store.save("j", TableState(table="t", watermark=watermark, needs_full=False))
    loaded = store.load("j", "t").watermark
    assert loaded == watermark
    assert type(loaded) is type(watermark)
    if isinstance(watermark, dt.datetime):
        assert loaded.utcoffset() == watermark.utcoffset()


def test_unknown_table_needs_a_full_copy(store: SqlStateStore) -> None:
    assert store.load("j", "never") == TableState(table="never", needs_full=True)
    assert store.load_all("nobody") == {}


def test_save_load_and_load_all(store: SqlStateStore) -> None:
    state = TableState(table="public.orders", watermark=T0, watermark_type="timestamptz", last_run_id="r1",
                       last_run_at=T0, last_status="ok", needs_full=False, extra={"lsn": "0/16B3748"})
    store.save("shop", state)
    store.save("shop", TableState(table="public.items", watermark=7))
    store.save("other", TableState(table="public.orders", watermark=1))
    assert store.load("shop", "public.orders") == state
    everything = store.load_all("shop")
    assert list(everything) == ["public.items", "public.orders"]
    assert everything["public.items"].watermark_type == "int"  # filled from the value when not given


def test_save_replaces_the_previous_state(store: SqlStateStore) -> None:
    store.save("j", TableState(table="t", watermark=1, last_error="boom", extra={"a": 1}))
    store.save("j", TableState(table="t", watermark=2, last_status="ok", needs_full=False))
    loaded = store.load("j", "t")
    assert (loaded.watermark, loaded.last_error, loaded.extra, loaded.needs_full) == (2, None, {}, False)


def test_times_come_back_as_aware_utc(store: SqlStateStore) -> None:
    local = dt.datetime(2024, 5, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    store.save("j", TableState(table="t", last_run_at=local))
    loaded = store.load("j", "t").last_run_at
    assert loaded == local
    assert loaded is not None and loaded.tzinfo == UTC


def test_extra_must_be_json(store: SqlStateStore) -> None:
    with pytest.raises(StateError, match="JSON"):
        store.save("j", TableState(table="t", extra={"when": object()}))


def test_reset_some_tables(store: SqlStateStore) -> None:
    for name in ("a", "b", "c"):
        store.save("j", TableState(table=name, watermark=5, needs_full=False, extra={"k": name}))
    assert store.reset("j", ["a", "c", "ghost", "a"]) == ["a", "c", "ghost"]
    states = store.load_all("j")
    assert [(s.needs_full, s.watermark) for s in states.values()] == [(True, None), (False, 5), (True, None)]
    assert states["a"].extra == {"k": "a"}
    assert store.load("j", "ghost").needs_full


def test_reset_all_tables_of_the_job_only(store: SqlStateStore) -> None:
    store.save("j", TableState(table="b", watermark=1, needs_full=False))
    store.save("j", TableState(table="a", watermark=1, needs_full=False))
    store.save("other", TableState(table="a", watermark=1, needs_full=False))
    assert store.reset("j", None) == ["a", "b"]
    assert all(s.needs_full and s.watermark is None for s in store.load_all("j").values())
    assert store.load("other", "a").watermark == 1
    assert store.reset("j", []) == []


# ---------------------------------------------------------------- runs


def _run(run_id: str, minutes: int, job: str = "j", **kwargs: Any) -> RunRecord:
    return RunRecord(run_id=run_id, job=job, started_at=T0 + dt.timedelta(minutes=minutes), **kwargs)


def test_runs_and_history(store: SqlStateStore) -> None:
    for i in range(5):
        store.start_run(_run(f"r{i}", minutes=i))
    finished = _run("r3", minutes=3, finished_at=T0 + dt.timedelta(minutes=4), status="failed",
                    trigger="schedule", tables=[
                        TableRunRecord(table="b", mode="incremental", status="ok", rows_read=2**40,
                                       rows_written=10, duration_s=1.25, watermark_before=dt.date(2024, 1, 1),
                                       watermark_after=dt.date(2024, 1, 2), null_watermark_rows=3),
                        TableRunRecord(table="a", mode="full", status="failed", error="boom"),
                    ])
    store.finish_run(finished)
    store.start_run(_run("x", minutes=9, job="other"))

    history = store.history("j", limit=3)
    assert [run.run_id for run in history] == ["r4", "r3", "r2"]
    assert history[1] == finished
    assert history[0].status == "running" and history[0].tables == []
    assert [run.run_id for run in store.history("j")] == ["r4", "r3", "r2", "r1", "r0"]
    assert store.history("j", limit=0) == []


def test_finish_run_replaces_table_records_and_needs_no_start(store: SqlStateStore) -> None:
    run = _run("r", minutes=0, status="ok", tables=[TableRunRecord(table="a", mode="full", status="ok")])
    store.finish_run(run)
    run.tables.append(TableRunRecord(table="a", mode="cdc", status="ok"))
    store.finish_run(run)
    assert store.history("j") == [run]


def test_starting_a_run_twice_is_an_error(store: SqlStateStore) -> None:
    store.start_run(_run("r", minutes=0))
    with pytest.raises(StateError, match="run r"):
        store.start_run(_run("r", minutes=0))


# ---------------------------------------------------------------- sharing and crashes


def test_two_stores_see_each_others_writes(store_url: str) -> None:
    with open_state_store(store_url) as first, open_state_store(store_url) as second:
        first.save("j", TableState(table="t", watermark=1))
        assert second.load("j", "t").watermark == 1
        second.save("j", TableState(table="t", watermark=2))
        second.finish_run(_run("r", minutes=0, status="ok"))
        assert first.load("j", "t").watermark == 2
        assert [run.run_id for run in first.history("j")] == ["r"]


def test_crash_mid_save_keeps_the_previous_state(store: SqlStateStore) -> None:
    store.save("j", TableState(table="t", watermark=1, needs_full=False))
    fail_after(store, "INSERT INTO TABLE_STATE")
    with pytest.raises(Boom):
        store.save("j", TableState(table="t", watermark=2, needs_full=False))
    assert store.load("j", "t").watermark == 1
    store.save("j", TableState(table="t", watermark=3))  # the store still works afterwards
    assert store.load("j", "t").watermark == 3


def test_crash_mid_finish_run_writes_nothing(store: SqlStateStore) -> None:
    store.start_run(_run("r", minutes=0))
    fail_after(store, "INSERT INTO RUN_TABLES")
    with pytest.raises(Boom):
        store.finish_run(_run("r", minutes=0, status="ok", tables=[
            TableRunRecord(table="a", mode="full", status="ok")]))
    [run] = store.history("j")
    assert (run.status, run.tables) == ("running", [])


def _open_and_save(url: str, index: int) -> int:
    with open_state_store(url) as store:
        store.save("j", TableState(table=f"t{index}", watermark=index))
    return index


def test_processes_opening_a_new_store_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path.as_posix()}/new/.copyjob/state.db"
    with ProcessPoolExecutor(4) as pool:
        assert sorted(pool.map(_open_and_save, [url] * 8, range(8))) == list(range(8))
    with open_state_store(url) as store:
        assert len(store.load_all("j")) == 8


# ---------------------------------------------------------------- errors


def test_newer_schema_is_refused(store_url: str) -> None:
    with open_state_store(store_url) as store, store.engine.begin() as conn:
        conn.execute(update(meta).values(value=str(SCHEMA_VERSION + 1)))
    with pytest.raises(StateError, match="upgrade copyjob") as caught:
        open_state_store(store_url)
    assert not caught.value.retriable


def test_unreadable_sqlite_file_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match=r"state store sqlite:///.*state\.db: cannot"):
        open_state_store(f"sqlite:///{tmp_path.as_posix()}/state.db")


def test_database_errors_become_state_errors(store: SqlStateStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE run_tables"))
    with pytest.raises(StateError, match="read the run history"):
        store.history("j")


def test_postgres_wrong_password_is_redacted_and_terminal(pg_url: str) -> None:
    bad = pg_url.replace(":postgres@", ":s3cret-pw@")
    assert bad != pg_url
    with pytest.raises(StateError) as caught:
        open_state_store(bad)
    assert "s3cret-pw" not in str(caught.value)
    assert ":***@" in str(caught.value)
    assert not caught.value.retriable


def test_postgres_unreachable_is_retriable() -> None:
    with pytest.raises(StateError) as caught:
        open_state_store("postgresql://u:pw@127.0.0.1:1/db?connect_timeout=2")
    assert "pw@" not in str(caught.value)
    assert caught.value.retriable


def test_postgres_meta_row_written_once(pg_url: str) -> None:
    for _ in range(2):
        open_state_store(pg_url).close()
    with open_state_store(pg_url) as store, store.engine.connect() as conn:
        assert conn.execute(meta.select()).all() == [("schema_version", str(SCHEMA_VERSION))]


def test_run_notes_in_a_store_made_before_them(store_url: str) -> None:
    with open_state_store(store_url) as old, old.engine.begin() as conn:  # a store from before run_notes
        conn.execute(text("DROP TABLE IF EXISTS run_notes"))
    with open_state_store(store_url) as store:
        run = _run("r", minutes=0, status="ok", tables=[
            TableRunRecord(table="a", mode="full", status="ok", note="incremental column changed: ts → seq"),
            TableRunRecord(table="b", mode="incremental", status="ok")])
        store.finish_run(run)
        assert store.history("j")[0].tables == run.tables


# ---------------------------------------------------------------- privacy

_MODES = """
import json, os, stat, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
from copyjob.offsets import open_state_store
from copyjob.core.contracts import TableState
db = Path(sys.argv[1])
store = open_state_store(str(db))
store.save("job", TableState(table="t", watermark=1))
names = [db.parent.parent, db.parent, db, *(Path(f"{db}{s}") for s in ("-wal", "-shm"))]
print(json.dumps({p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in names if p.exists()}))
store.close()
"""


@pytest.mark.parametrize("umask", ["022", "027", "077"])
def test_state_store_and_the_folders_it_creates_are_private(tmp_path: Path, umask: str) -> None:
    db = tmp_path / "made" / ".copyjob" / "state.db"
    done = subprocess.run([sys.executable, "-c", _MODES, str(db), umask], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"made": "0o700", ".copyjob": "0o700", "state.db": "0o600",
                                       "state.db-wal": "0o600", "state.db-shm": "0o600"}


def test_existing_folders_and_files_keep_their_modes(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    db = folder / "state.db"
    done = subprocess.run([sys.executable, "-c", _MODES, str(db), "022"], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == 0, done.stderr
    modes = json.loads(done.stdout)
    assert modes["shared"] == "0o755"
    assert modes["state.db"] == "0o600"
    existing = tmp_path / "mine.db"
    existing.touch(mode=0o640)
    existing.chmod(0o640)
    open_state_store(str(existing)).close()
    assert oct(existing.stat().st_mode & 0o777) == "0o640"


def test_postgres_store_password_with_unencoded_at(postgres_server: Any, pg_url: str) -> None:
    password = "S3cr3tPW@at@S3cr3tPW!dst"
    database = pg_url.rsplit("/", 1)[1]
    role = f"st_{database}"
    postgres_server.psql(database, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'; "
                                   f"GRANT ALL ON SCHEMA public TO {role}")
    url = f"postgresql://{role}:{password}@127.0.0.1:{postgres_server.port}/{database}"
    with open_state_store(url) as opened:
        opened.save("job", TableState(table="t", watermark=1))
        assert password not in opened.url and "S3cr3tPW" not in repr(opened)
        assert opened.load("job", "t").watermark == 1


def test_store_never_keeps_a_password_in_error_texts(store: SqlStateStore) -> None:
    leaky = "cannot connect to postgresql://loader:S3cr3tPW@at@S3cr3tPW!dst@db.internal/shop: refused"
    store.save("job", TableState(table="t", last_status="failed", last_error=leaky))
    store.finish_run(RunRecord(run_id="r1", job="job", started_at=T0, finished_at=T0, status="failed",
                               trigger="manual", tables=[TableRunRecord(table="t", mode="full", status="failed",
                                                                        error=leaky, note=leaky)]))
    with store.engine.connect() as conn:
        stored = [repr(row) for table in ("table_state", "run_tables", "run_notes")
                  for row in conn.execute(text(f"SELECT * FROM {table}"))]
    assert stored and not any("S3cr3tPW" in row for row in stored), stored
    assert store.load("job", "t").last_error == \
        "cannot connect to postgresql://loader:***@db.internal/shop: refused"
