"""Progress per table: a live bar on a terminal (rows so far, rows/s), plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

PLAIN_EVERY_S = 10.0


class Progress:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live

    @contextmanager
    def table(self, label: str) -> Iterator[Callable[[int], None]]:
        """Yield a callback that adds copied rows to ``label``'s count."""
        if self.live:
            with self._live(label) as advance:
                yield advance
        else:
            with self._plain(label) as advance:
                yield advance

    @contextmanager
    def _live(self, label: str) -> Iterator[Callable[[int], None]]:
        from rich.console import Console
        from rich.progress import Progress as RichProgress
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"),
                   TextColumn("{task.completed:,.0f} rows"), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn())
        start = time.monotonic()
        with RichProgress(*columns, console=Console(file=self.stream), transient=True) as bar:
            task = bar.add_task(label, total=None, rate="")

            def advance(rows: int) -> None:
                elapsed = max(time.monotonic() - start, 1e-6)
                done = bar.tasks[0].completed + rows
                bar.update(task, advance=rows, rate=f"{done / elapsed:,.0f} rows/s")

            yield advance

    @contextmanager
    def _plain(self, label: str) -> Iterator[Callable[[int], None]]:
        start = last = time.monotonic()
        done = 0

        def advance(rows: int) -> None:
            nonlocal done, last
            done += rows
            now = time.monotonic()
            if now - last >= PLAIN_EVERY_S:
                last = now
                rate = done / max(now - start, 1e-6)
                print(f"{label}: {done:,} rows ({rate:,.0f} rows/s)", file=self.stream, flush=True)

        yield advance
