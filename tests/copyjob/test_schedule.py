"""Fire times (cron in a time zone, DST, every:), missed runs, and the service loop driven by a fake clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from copyjob.offsets import default_state_url, open_state_store

from copyjob.jobfile import Schedule
from copyjob.loader import load_job
from copyjob.schedule import ScheduleRule, is_missed, load_last_fire, local_zone, recorded_fire, save_last_fire
from copyjob.serve import Server, files_label, schedule_label, served_job
from tests.helpers import sqlite_rows, sqlite_script, write_job

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def cron(expr: str, tz: str | None = "Europe/Berlin") -> ScheduleRule:
    return ScheduleRule.of(Schedule(cron=expr, timezone=tz))


def fires(rule: ScheduleRule, start: datetime, n: int) -> list[datetime]:
    out = []
    for _ in range(n):
        start = rule.next_after(start)
        out.append(start)
    return out


def test_cron_follows_the_wall_clock_of_its_zone() -> None:
    rule = cron("0 6 * * *")
    nxt = rule.next_after(datetime(2026, 1, 10, 4, 59, tzinfo=UTC))  # 05:59 in Berlin
    assert nxt == datetime(2026, 1, 10, 6, 0, tzinfo=BERLIN) and nxt.utcoffset() == timedelta(hours=1)
    summer = rule.next_after(datetime(2026, 7, 10, 5, 0, tzinfo=UTC))  # 07:00 in Berlin: tomorrow
    assert summer == datetime(2026, 7, 11, 6, 0, tzinfo=BERLIN) and summer.utcoffset() == timedelta(hours=2)


def test_cron_day_of_week_and_strictly_after() -> None:
    rule = cron("0 9 * * SUN", "UTC")
    sunday_9 = datetime(2026, 5, 10, 9, 0, tzinfo=UTC)
    assert rule.next_after(datetime(2026, 5, 6, tzinfo=UTC)) == sunday_9
    assert rule.next_after(sunday_9) == sunday_9 + timedelta(days=7)


def test_dst_gap_fires_once_right_after_it() -> None:
    """02:30 does not exist on 29 March 2026 in Berlin: the daily run happens at 03:00, once."""
    got = fires(cron("30 2 * * *"), datetime(2026, 3, 28, 12, tzinfo=BERLIN), 3)
    assert [d.strftime("%m-%d %H:%M %z") for d in got] == ["03-29 03:00 +0200", "03-30 02:30 +0200",
                                                          "03-31 02:30 +0200"]


def test_dst_repeated_hour_fires_a_fixed_time_once() -> None:
    got = fires(cron("30 1 * * *", "America/New_York"), datetime(2026, 10, 31, 12, tzinfo=NEW_YORK), 2)
    assert [d.strftime("%m-%d %H:%M %z") for d in got] == ["11-01 01:30 -0400", "11-02 01:30 -0500"]


def test_dst_repeated_hour_keeps_interval_schedules_by_elapsed_time() -> None:
    got = fires(cron("0 * * * *", "America/New_York"), datetime(2026, 11, 1, 0, 30, tzinfo=NEW_YORK), 3)
    assert [d.astimezone(UTC).hour for d in got] == [5, 6, 7]  # 01:00 EDT, 01:00 EST, 02:00 EST


def test_every_counts_from_the_last_fire() -> None:
    rule = ScheduleRule.of(Schedule(every="15m"))
    t = datetime(2026, 1, 1, 12, 0, 7, tzinfo=UTC)
    assert rule.next_after(t) == t + timedelta(minutes=15)
    assert rule.expression == "every 15m" and schedule_label([rule], missed=False) == "schedule: every 15m"


def test_missed_runs_and_what_is_recorded() -> None:
    rule = cron("0 6 * * *", "UTC")
    now = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
    assert not is_missed(rule, None, now)  # never served: nothing missed
    assert not is_missed(rule, datetime(2026, 5, 10, 6, 0, tzinfo=UTC), now)
    assert is_missed(rule, datetime(2026, 5, 9, 6, 0, tzinfo=UTC), now)
    assert is_missed(rule, datetime(2026, 5, 1, 6, 0, tzinfo=UTC), now)  # many missed: still one catch-up
    every = ScheduleRule.of(Schedule(every="1m"))
    due = now - timedelta(milliseconds=300)
    assert recorded_fire(every, due, now) == due  # on time: no drift
    late = now - timedelta(hours=1)
    assert recorded_fire(every, late, now) == now  # catch-up: missed ones are not replayed one by one


def test_local_zone_has_dst_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    zone, name = local_zone()
    assert name == "Europe/Berlin" and datetime(2026, 7, 1, tzinfo=zone).utcoffset() == timedelta(hours=2)


def test_labels_fit_the_history_column() -> None:
    assert files_label(["inbox/a.csv", "inbox/b.csv"]) == "trigger: file_arrival inbox/a.csv, inbox/b.csv"
    many = files_label([f"inbox/file-{i:03d}.csv" for i in range(50)])
    assert len(many) <= 64 and many.endswith("more)") and "inbox/file-000.csv" in many


# ---------------------------------------------------------------- the loop with a fake clock


class FakeClock:
    """Time jumps straight to the next deadline, once the runs in flight have finished."""

    def __init__(self, start: datetime, until: datetime) -> None:
        self.t = start
        self.until = until
        self.server: Server | None = None

    def now(self) -> datetime:
        return self.t

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        assert self.server is not None
        for job in self.server.jobs:
            if job.running is not None:
                job.running.result(timeout=30)
        self.t += timedelta(seconds=seconds)
        if self.t >= self.until:
            self.server.stop()


def test_serve_catches_up_a_missed_schedule_once_then_follows_it(tmp_path: Path) -> None:
    sqlite_script(tmp_path / "src.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
                                       "INSERT INTO t VALUES (1, 'a'), (2, 'b');")
    path = write_job(tmp_path / "job.yaml", {
        "job": "clocked", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "full", "update_method": "overwrite"}, "tables": [{"name": "t"}],
        "schedules": [{"cron": "0 6 * * *", "timezone": "UTC"}]})
    loaded = load_job(path)
    rule = ScheduleRule.of(loaded.job.schedules[0])
    start = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
    with open_state_store(default_state_url(path)) as store:  # serve last fired three days ago
        save_last_fire(store, loaded.scope, rule, datetime(2026, 5, 7, 6, 0, tzinfo=UTC))
    clock = FakeClock(start, until=start + timedelta(days=2))
    server = Server([served_job(loaded, lambda: open_state_store(default_state_url(path)))], clock=clock,
                    tick_s=7 * 86400)
    clock.server = server
    server.serve()  # two fake days, in well under a second
    with open_state_store(default_state_url(path)) as store:
        runs = store.history(loaded.scope, limit=10)
        assert load_last_fire(store, loaded.scope, rule) == datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
    assert [(r.trigger, r.status) for r in reversed(runs)] == [
        ("schedule: 0 6 * * * (UTC), missed", "ok"),
        ("schedule: 0 6 * * * (UTC)", "ok"),
        ("schedule: 0 6 * * * (UTC)", "ok"),
    ]
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "b")]


def test_a_rule_with_no_fire_time_left_neither_crashes_serve_nor_status(tmp_path: Path) -> None:
    """The loader refuses a cron that never fires; should one reach the loop anyway (croniter searches a bounded
    span of years), serve drops it with a warning and status says "never", instead of a traceback."""
    from copyjob.serve import ServedJob
    from copyjob.summary import schedule_rows

    never = Schedule.model_construct(cron="0 0 31 2 *", every=None, timezone="UTC")
    rule = ScheduleRule.of(never)
    start = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
    assert rule.next_after(start) is None
    assert not is_missed(rule, start - timedelta(days=30), start)
    assert recorded_fire(rule, start, start + timedelta(hours=1)) == start

    sqlite_script(tmp_path / "src.db", "CREATE TABLE t (id INTEGER PRIMARY KEY);")
    path = write_job(tmp_path / "job.yaml", {
        "job": "never", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
        "tables": [{"name": "t"}], "schedules": [{"every": "1d"}]})
    loaded = load_job(path)
    every = ScheduleRule.of(loaded.job.schedules[0])
    clock = FakeClock(start, until=start + timedelta(days=2))
    server = Server([ServedJob(loaded, lambda: open_state_store(default_state_url(path)), [rule, every], [])],
                    clock=clock, tick_s=7 * 86400)
    clock.server = server
    server.serve()
    with open_state_store(default_state_url(path)) as store:
        assert [r.trigger for r in store.history(loaded.scope, limit=10)] == ["schedule: every 1d"]
        job = loaded.job.model_copy(update={"schedules": [never]})
        assert [(r["next_run"], r["missed"]) for r in schedule_rows(store, job, loaded.scope, start)] == \
            [("never", False)]
