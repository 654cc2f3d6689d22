"""The per-job run lock, on SQLite and (when the ``pg_url`` fixture can start a server) PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from copyjob.offsets import LockInfo, RunLock, SqlStateStore, open_state_store
from copyjob.offsets import lock as lock_module
from copyjob.offsets.schema import locks
from sqlalchemy import insert

from copyjob.core.contracts import TableState
from copyjob.core.errors import StateError

REPO = Path(__file__).parents[2]


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


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judge existing locks as if from another machine: only expiry counts, not whether the pid lives."""
    monkeypatch.setattr(lock_module, "HOSTNAME", "another-host")


def _insert_lock(store: SqlStateStore, job: str, *, pid: int, hostname: str, expires_in_s: float) -> None:
    now = dt.datetime.now(dt.UTC)
    with store.engine.begin() as conn:
        conn.execute(insert(locks).values(
            job=job, holder="ghost", token="t0", pid=pid, hostname=hostname, acquired_at=now,
            heartbeat_at=now, expires_at=now + dt.timedelta(seconds=expires_in_s)))


def test_second_acquirer_is_refused_until_release(store: SqlStateStore) -> None:
    first = store.acquire_lock("j", "run-1")
    assert isinstance(first, RunLock)
    assert store.acquire_lock("j", "run-2") is None
    info = store.lock_info("j")
    assert isinstance(info, LockInfo)
    assert (info.holder, info.pid, info.hostname) == ("run-1", os.getpid(), lock_module.HOSTNAME)
    assert "held by run-1 (pid" in info.describe()
    other_job = store.acquire_lock("k", "run-3")
    assert other_job is not None
    first.release()
    assert not first.held
    second = store.acquire_lock("j", "run-2")
    assert second is not None and second.holder == "run-2"
    second.release()
    other_job.release()
    assert store.lock_info("j") is None


def test_context_exit_releases_and_release_twice_is_harmless(store: SqlStateStore) -> None:
    lock = store.acquire_lock("j", "run-1")
    assert lock is not None
    with lock:
        lock.check()
    assert store.lock_info("j") is None
    lock.release()
    with pytest.raises(StateError, match="already released"):
        lock.check()


def test_release_on_exit_does_not_hide_the_runs_error(store: SqlStateStore) -> None:
    lock = store.acquire_lock("j", "run-1")
    assert lock is not None
    with pytest.raises(KeyError), lock:
        raise KeyError("the run failed")
    assert store.lock_info("j") is None


def test_waiting_acquirer_gets_the_lock_when_released(store: SqlStateStore) -> None:
    first = store.acquire_lock("j", "run-1")
    assert first is not None
    threading.Timer(0.5, first.release).start()
    started = time.monotonic()
    second = store.acquire_lock("j", "run-2", wait_s=10)
    assert second is not None
    assert 0.4 < time.monotonic() - started < 5
    second.release()


def test_waiting_gives_up_after_wait_s(store: SqlStateStore) -> None:
    first = store.acquire_lock("j", "run-1")
    started = time.monotonic()
    assert store.acquire_lock("j", "run-2", wait_s=0.6) is None
    assert 0.5 < time.monotonic() - started < 3
    assert first is not None
    first.release()


@pytest.mark.usefixtures("elsewhere")
def test_expired_lock_is_taken_over_and_the_old_holder_learns_it(store: SqlStateStore) -> None:
    old = store.acquire_lock("j", "run-1", ttl_s=0.3, auto_heartbeat=False)
    assert old is not None
    assert store.acquire_lock("j", "run-2") is None
    time.sleep(0.4)
    new = store.acquire_lock("j", "run-2")
    assert new is not None
    with pytest.raises(StateError, match="lost"):
        old.heartbeat()
    with pytest.raises(StateError, match="lost"):
        old.check()
    old.release()  # must not delete the new holder's row
    info = store.lock_info("j")
    assert info is not None and info.holder == "run-2"
    new.release()


@pytest.mark.usefixtures("elsewhere")
def test_heartbeat_keeps_a_long_run_locked(store: SqlStateStore) -> None:
    lock = store.acquire_lock("j", "run-1", ttl_s=0.6)
    assert lock is not None
    first = store.lock_info("j")
    time.sleep(1.5)
    assert store.acquire_lock("j", "run-2") is None
    renewed = store.lock_info("j")
    assert first is not None and renewed is not None
    assert renewed.expires_at > first.expires_at
    lock.check()
    lock.release()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(store: SqlStateStore) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    _insert_lock(store, "j", pid=child.pid, hostname=lock_module.HOSTNAME, expires_in_s=3600)
    lock = store.acquire_lock("j", "run-2")
    assert lock is not None
    lock.release()


def test_live_lock_on_another_host_is_respected(store: SqlStateStore) -> None:
    _insert_lock(store, "j", pid=999_999_999, hostname="another-host", expires_in_s=3600)
    assert store.acquire_lock("j", "run-2") is None
    assert store.break_lock("j")
    assert not store.break_lock("j")
    lock = store.acquire_lock("j", "run-2")
    assert lock is not None
    lock.release()


def test_lock_is_exclusive_across_processes(store_url: str, store: SqlStateStore) -> None:
    code = (
        "import sys; from offsets import open_state_store\n"
        "store = open_state_store(sys.argv[1])\n"
        "lock = store.acquire_lock('j', 'child')\n"
        "print('held' if lock else 'refused', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, store_url], cwd=REPO, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        assert store.acquire_lock("j", "parent") is None
        child.kill()  # a crash: no release
        child.wait()
        lock = store.acquire_lock("j", "parent", wait_s=5)
        assert lock is not None  # same host, dead pid: taken over without waiting for the TTL
        lock.release()
    finally:
        child.kill()
        child.wait()


def _count_under_lock(url: str, worker: int) -> int:
    """Read-modify-write a counter under the lock: any overlap between processes would lose an update."""
    with open_state_store(url) as store:
        for _ in range(10):
            lock = store.acquire_lock("j", f"worker-{worker}", wait_s=60)
            assert lock is not None
            with lock:
                count = store.load("j", "counter").watermark or 0
                time.sleep(0.002)
                store.save("j", TableState(table="counter", watermark=count + 1))
    return worker


def test_processes_take_turns(store_url: str, store: SqlStateStore) -> None:
    with ProcessPoolExecutor(4) as pool:
        assert sorted(pool.map(_count_under_lock, [store_url] * 4, range(4))) == [0, 1, 2, 3]
    assert store.load("j", "counter").watermark == 40


def test_close_releases_held_locks(store_url: str) -> None:
    first = open_state_store(store_url)
    assert first.acquire_lock("j", "run-1") is not None
    first.close()
    with open_state_store(store_url) as second:
        assert second.lock_info("j") is None


def test_bad_arguments_are_refused(store: SqlStateStore) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        store.acquire_lock("j", "x", ttl_s=0)
    with pytest.raises(ValueError, match="wait_s"):
        store.acquire_lock("j", "x", wait_s=-1)


def test_pid_alive() -> None:
    assert lock_module.pid_alive(os.getpid())
    assert not lock_module.pid_alive(0)
