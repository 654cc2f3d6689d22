"""When a job's schedules fire: cron expressions (croniter, in an IANA time zone) and ``every:`` intervals.

Pure time arithmetic, no I/O, so that it can be tested with any clock:

- :class:`ScheduleRule` wraps one ``schedules:`` entry: :meth:`~ScheduleRule.next_after` is the first fire time
  strictly after a given instant.
- Missed runs: serve records each schedule's last fire time in the state store. At start, a schedule whose
  next fire after that record is already past (:func:`is_missed`) was missed while serve was down and runs
  once, however many fire times were missed.
- :class:`Clock` is what the service loop asks for the time and sleeps on; tests pass a fake one.

Daylight saving time (cron in a zone that has it): a wall-clock time skipped when clocks go forward fires at
the first instant after the gap (02:30 → 03:00); a time that occurs twice when clocks go back fires once, at
its first occurrence, unless the hour field is a wildcard (``*``, ``*/2``), whose schedule is about elapsed
hours and fires at both (the rule of Vixie cron).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from copyjob.jobfile import Schedule, parse_duration

__all__ = ["Clock", "ScheduleRule", "SystemClock", "is_missed", "load_last_fire", "local_zone", "recorded_fire",
           "save_last_fire"]


class Clock(Protocol):
    """The time source of the service loop (injectable so that tests need not wait real hours)."""

    def now(self) -> datetime:
        """The current instant, timezone-aware."""

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        """Wait ``seconds`` or until ``wake`` is set, whichever comes first."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        wake.wait(max(seconds, 0.0))


def local_zone() -> tuple[tzinfo, str]:
    """The machine's time zone and its name, with its DST rules (``datetime.astimezone()`` gives only a fixed
    offset, which would put a daily 06:00 at 07:00 for half the year)."""
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        try:
            return ZoneInfo(tz_env), tz_env
        except (ZoneInfoNotFoundError, ValueError):
            pass
    link = Path("/etc/localtime")
    try:
        target = str(link.resolve())
        if "zoneinfo/" in target:
            name = target.split("zoneinfo/", 1)[1]
            return ZoneInfo(name), name
        with link.open("rb") as f:
            return ZoneInfo.from_file(f, key="localtime"), "localtime"
    except (OSError, ZoneInfoNotFoundError, ValueError):
        fixed = datetime.now().astimezone().tzinfo or UTC
        return fixed, str(fixed)


@dataclass(frozen=True)
class ScheduleRule:
    """One ``schedules:`` entry, ready to compute fire times."""

    spec: Schedule
    zone: tzinfo
    zone_name: str

    @classmethod
    def of(cls, spec: Schedule) -> ScheduleRule:
        if spec.timezone:
            return cls(spec, ZoneInfo(spec.timezone), spec.timezone)
        zone, name = local_zone()
        return cls(spec, zone, name)

    @property
    def expression(self) -> str:
        """``0 6 * * *`` or ``every 15m``: what run labels and status show."""
        if self.spec.cron is not None:
            return self.spec.cron if self.spec.timezone is None else f"{self.spec.cron} ({self.spec.timezone})"
        return f"every {self.spec.every}"

    @property
    def key(self) -> str:
        """Names the schedule's last fire time in the state store; editing the schedule starts afresh."""
        if self.spec.cron is not None:
            return f"schedule:cron:{self.spec.cron}@{self.spec.timezone or 'local'}"
        return f"schedule:every:{parse_duration(self.spec.every or '')}"

    @property
    def interval(self) -> timedelta | None:
        return timedelta(seconds=parse_duration(self.spec.every)) if self.spec.every is not None else None

    def next_after(self, instant: datetime) -> datetime | None:
        """The first fire time strictly after ``instant`` (aware), in the schedule's zone; None when the
        schedule never fires again (the loader refuses a cron that never fires, but croniter searches a bounded
        number of years).

        ``every:`` counts from ``instant`` (the last fire); cron follows the calendar in its zone.
        """
        interval = self.interval
        if interval is not None:
            return (instant + interval).astimezone(self.zone)
        from croniter import croniter
        from croniter.croniter import CroniterError

        try:
            it = croniter(self.spec.cron, instant.astimezone(self.zone))
            fire: datetime = it.get_next(datetime)
            while fire.fold == 1 and not self._wildcard_hour() and _is_repeated(fire):
                fire = it.get_next(datetime)  # the wall-clock time already fired an hour ago
        except CroniterError:
            return None
        return fire

    def _wildcard_hour(self) -> bool:
        fields = (self.spec.cron or "").split()
        return len(fields) >= 2 and fields[1].startswith("*")


def _is_repeated(fire: datetime) -> bool:
    """True for the second occurrence of a wall-clock time that clocks going back made happen twice."""
    return fire.replace(fold=0).utcoffset() != fire.replace(fold=1).utcoffset()


def is_missed(rule: ScheduleRule, last_fire: datetime | None, now: datetime) -> bool:
    """Did the schedule have a fire time after ``last_fire`` that is already past at ``now``?

    Equivalently (for cron): the previous fire time at or before ``now`` is later than the last recorded
    fire. With no record the schedule was never served: nothing was missed.
    """
    if last_fire is None:
        return False
    due = rule.next_after(last_fire)
    return due is not None and due <= now


class _MetaStore(Protocol):
    def get_meta(self, job: str, key: str) -> str | None: ...

    def set_meta(self, job: str, key: str, value: str) -> None: ...


def load_last_fire(store: _MetaStore, job: str, rule: ScheduleRule) -> datetime | None:
    """The schedule's last fire time recorded in the state store, or None when serve never ran it."""
    text = store.get_meta(job, rule.key)
    if text is None:
        return None
    fire = datetime.fromisoformat(text)
    return fire if fire.tzinfo is not None else fire.replace(tzinfo=UTC)


def save_last_fire(store: _MetaStore, job: str, rule: ScheduleRule, fire: datetime) -> None:
    store.set_meta(job, rule.key, fire.astimezone(UTC).isoformat())


def recorded_fire(rule: ScheduleRule, due: datetime, now: datetime) -> datetime:
    """What to record as the last fire when a fire due at ``due`` happens at ``now``.

    The due time when on schedule, so ``every:`` does not drift by the loop's latency; ``now`` after a catch-up
    (more than one fire time behind), so the missed ones are not run again one by one.
    """
    following = rule.next_after(due)
    return due if following is None or following > now else now
