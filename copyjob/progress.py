"""Progress per table: a live bar on a terminal, plain lines every 10 s otherwise (``COPYJOB_PROGRESS_EVERY``,
a duration, changes that for tests and demos).

With a total (a full copy: the source's row estimate, e.g. ``pg_class.reltuples``) the bar shows a percentage
and the time left; without one, rows so far and rows/s. An estimate is only an estimate: once more rows than
it said have been copied, the total grows with the count (the bar never passes 100 %).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

PLAIN_EVERY_S = 10.0
PLAIN_EVERY_ENV = "COPYJOB_PROGRESS_EVERY"


def plain_every_s() -> float:
    """Seconds between plain progress lines: ``COPYJOB_PROGRESS_EVERY`` when set, else :data:`PLAIN_EVERY_S`."""
    if not os.environ.get(PLAIN_EVERY_ENV):
        return PLAIN_EVERY_S
    from copyjob.jobfile import duration_from_env

    return duration_from_env(PLAIN_EVERY_ENV, PLAIN_EVERY_S)


@dataclass
class Tally:
    """Rows copied of one table so far, against an optional estimated total."""

    total: int | None = None
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, rows: int) -> None:
        self.done += rows
        if self.total is not None and self.done > self.total:
            self.total = self.done

    def rate(self, now: float | None = None) -> float:
        return self.done / max((time.monotonic() if now is None else now) - self.started, 1e-6)

    @property
    def percent(self) -> float | None:
        if not self.total:
            return None
        return min(100.0, 100.0 * self.done / self.total)

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at the rate so far (None without a total or before the first rows)."""
        if not self.total or not self.done:
            return None
        return max(self.total - self.done, 0) / self.rate(now)

    def line(self, label: str, now: float | None = None) -> str:
        """``orders: 12,000 of 50,000 rows (24%, 3,000 rows/s, about 13 s left)``."""
        rate = f"{self.rate(now):,.0f} rows/s"
        if self.total is None or self.percent is None:
            return f"{label}: {self.done:,} rows ({rate})"
        eta = self.eta_s(now)
        left = "" if eta is None else f", about {_duration(eta)} left"
        return f"{label}: {self.done:,} of {self.total:,} rows ({self.percent:.0f}%, {rate}{left})"


@dataclass
class StreamTally:
    """Changes a stream applied so far, by kind, and its lag (seconds behind the source)."""

    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    lag_s: float | None = None

    @property
    def events(self) -> int:
        return self.inserts + self.updates + self.deletes

    def add(self, ops: Mapping[str, int]) -> None:
        """``ops``: counts by change kind (``c`` insert, ``u`` update, ``d`` delete; others are not rows)."""
        self.inserts += ops.get("c", 0)
        self.updates += ops.get("u", 0)
        self.deletes += ops.get("d", 0)

    def line(self, label: str) -> str:
        """``orders, items: 1,234 changes applied (1,000 inserts, 200 updates, 34 deletes), lag 0.4 s``."""
        lag = "-" if self.lag_s is None else f"{self.lag_s:,.1f} s"
        return (f"{label}: {self.events:,} changes applied ({self.inserts:,} inserts, {self.updates:,} updates, "
                f"{self.deletes:,} deletes), lag {lag}")


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


class Progress:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live

    @contextmanager
    def table(self, label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """Yield a callback that adds copied rows to ``label``'s count; ``total`` is the estimated row count."""
        tally = Tally(total=total if total and total > 0 else None)
        if self.live:
            with self._live(label, tally) as advance:
                yield advance
        else:
            with self._plain(label, tally) as advance:
                yield advance

    @contextmanager
    def _live(self, label: str, tally: Tally) -> Iterator[Callable[[int], None]]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        counted = TextColumn("{task.completed:,.0f} rows" if tally.total is None
                             else "{task.completed:,.0f}/{task.total:,.0f} rows")
        columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), counted,
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
        if tally.total is not None:
            columns[2:2] = [BarColumn(), TaskProgressColumn()]
            columns.append(TimeRemainingColumn())
        with RichProgress(*columns, console=Console(file=self.stream), transient=True) as bar:
            task = bar.add_task(label, total=tally.total, rate="")

            def advance(rows: int) -> None:
                tally.add(rows)
                bar.update(task, completed=tally.done, total=tally.total, rate=f"{tally.rate():,.0f} rows/s")

            yield advance

    @contextmanager
    def _plain(self, label: str, tally: Tally) -> Iterator[Callable[[int], None]]:
        last = tally.started
        every_s = plain_every_s()

        def advance(rows: int) -> None:
            nonlocal last
            tally.add(rows)
            now = time.monotonic()
            if now - last >= every_s:
                last = now
                print(tally.line(label, now), file=self.stream, flush=True)

        yield advance

    @contextmanager
    def changes(self, label: str) -> Iterator[Callable[[Mapping[str, int], float | None], None]]:
        """Yield ``report(ops, lag_s)``: call it every turn of a stream with the changes just applied (counts
        by kind) and the lag now; a live line on a terminal, a line every 10 s otherwise."""
        tally = StreamTally()
        if not self.live:
            last = time.monotonic()
            every_s = plain_every_s()

            def plain(ops: Mapping[str, int], lag_s: float | None) -> None:
                nonlocal last
                tally.add(ops)
                tally.lag_s = lag_s
                now = time.monotonic()
                if now - last >= every_s:
                    last = now
                    print(tally.line(label), file=self.stream, flush=True)

            yield plain
            return
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        with Live(Text(tally.line(label)), console=Console(file=self.stream), transient=True,
                  refresh_per_second=4) as live:

            def shown(ops: Mapping[str, int], lag_s: float | None) -> None:
                tally.add(ops)
                tally.lag_s = lag_s
                live.update(Text(tally.line(label)))

            yield shown
