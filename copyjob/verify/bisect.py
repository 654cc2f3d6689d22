"""Compare one table on two sides: digests per key range inside each database, ranges that differ cut again
until they are small, then the rows of the small ranges compared one by one.

Source and destination answer each question in parallel (two threads, one connection each). Integer keys
are cut by value with one ``GROUP BY`` query per range (``RowDigests.bucket_digests``); other keys at
boundaries sampled from the side with more rows. A key found on one side only in one small range and on the
other side in another (collations that order strings differently) is matched up at the end.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from copyjob.core.contracts import DigestColumn, KeySpan, RowDigests, RowFilter
from copyjob.core.schema import TableName
from copyjob.verify.ranges import bucket_span, spans_between, width_for

T = TypeVar("T")
Row = tuple[tuple[Any, ...], tuple[str | None, ...]]


@dataclass(frozen=True)
class Side:
    digests: RowDigests
    table: TableName
    columns: tuple[DigestColumn, ...]
    key: tuple[str, ...]
    filters: tuple[RowFilter, ...] = ()

    def span(self, lower: Any = None, upper: Any = None) -> KeySpan:
        return KeySpan(self.key[0] if self.key else self.columns[0].name, lower, upper, self.filters)

    def rows(self, span: KeySpan) -> Iterable[Row]:
        return self.digests.rows(self.table, self.columns, self.key, span)


@dataclass(frozen=True)
class Tuning:
    rows_per_range: int = 10_000
    """Rows per range of the first pass over keys cut at sampled boundaries (a query per range)."""
    bucket_rows: int = 1_000
    """Rows per bucket of the first pass over an integer key: one ``GROUP BY`` returns every bucket whatever
    their number, so small buckets cost nothing and a differing one is compared row by row at once."""
    leaf_rows: int = 1_000
    """A range with at most this many rows on each side is compared row by row."""
    fanout: int = 16
    """Parts a differing range is cut into."""


@dataclass
class Findings:
    rows_source: int = 0
    rows_destination: int = 0
    ranges: int = 0
    only_source: dict[tuple[str | None, ...], Row] = field(default_factory=dict)
    only_destination: dict[tuple[str | None, ...], Row] = field(default_factory=dict)
    different: dict[tuple[str | None, ...], tuple[Row, Row]] = field(default_factory=dict)
    whole_table_differs: bool = False


class Comparison:
    """One table compared over ``lanes`` (a source and a destination connection each): the first pass's ranges
    are shared out between the lanes, each bisects its own."""

    def __init__(self, lanes: Sequence[tuple[Side, Side]], key_positions: list[int], tuning: Tuning,
                 pool: ThreadPoolExecutor, found: Findings | None = None, lock: threading.Lock | None = None) -> None:
        self.lanes = lanes
        self.source, self.destination = lanes[0]
        self.tuning, self.pool = tuning, pool
        self.key_positions = key_positions
        self.found = found or Findings()
        self.lock = lock or threading.Lock()

    def _lane(self, i: int) -> Comparison:
        return Comparison([self.lanes[i]], self.key_positions, self.tuning, self.pool, self.found, self.lock)

    def _share(self, parts: Sequence[T], work: Callable[[Comparison, T], None]) -> None:
        """``work`` on each part, the parts dealt out round-robin to the lanes, the lanes at once."""
        n = len(self.lanes)
        if n == 1:
            for part in parts:
                work(self, part)
            return

        def lane(i: int) -> None:
            mine = self._lane(i)
            for part in parts[i::n]:
                work(mine, part)

        with ThreadPoolExecutor(n, thread_name_prefix="verify-lane") as lanes:
            for future in [lanes.submit(lane, i) for i in range(n)]:
                future.result()

    def both(self, ask: Callable[[Side], T]) -> tuple[T, T]:
        """The same question to both sides at once."""
        a = self.pool.submit(ask, self.source)
        b = self.pool.submit(ask, self.destination)
        return a.result(), b.result()

    # ------------------------------------------------------------ entry points

    def without_key(self) -> Findings:
        """Counts and one whole-table hash."""
        (cs, ds), (cd, dd) = self.both(lambda s: s.digests.digest(s.table, s.columns, s.span()))
        self.found.rows_source, self.found.rows_destination, self.found.ranges = cs, cd, 1
        self.found.whole_table_differs = (cs, ds) != (cd, dd)
        return self.found

    def by_value(self) -> Findings:
        (lo_s, hi_s, n_s), (lo_d, hi_d, n_d) = self.both(lambda s: s.digests.key_bounds(s.table, s.span()))
        self.found.rows_source, self.found.rows_destination = n_s, n_d
        lows = [int(v) for v in (lo_s, lo_d) if v is not None]
        highs = [int(v) for v in (hi_s, hi_d) if v is not None]
        if lows:
            span = self.source.span(min(lows), max(highs) + 1)
            width = width_for(span.lower, span.upper, max(n_s, n_d), self.tuning.bucket_rows)
            buckets = -(-(span.upper - span.lower) // width)
            n = min(len(self.lanes), buckets)
            # contiguous runs of whole buckets, one per lane
            cuts = [span.lower + width * (buckets * i // n) for i in range(n)] + [span.upper]
            runs = [replace(span, lower=a, upper=b) for a, b in itertools.pairwise(cuts)]
            self._share(runs, lambda lane, run: lane._buckets(run, width))
        return self._matched()

    def by_sample(self) -> Findings:
        (_, _, n_s), (_, _, n_d) = self.both(lambda s: s.digests.key_bounds(s.table, s.span()))
        self.found.rows_source, self.found.rows_destination = n_s, n_d
        span = self.source.span()
        parts = max(1, -(-max(n_s, n_d) // self.tuning.rows_per_range))
        self._share(self._cut(span, n_s >= n_d, parts), lambda lane, part: lane._by_sample(part))
        return self._matched()

    # ------------------------------------------------------------ the two ways of cutting

    def _by_value(self, span: KeySpan, rows: int, rows_per_range: int) -> None:
        self._buckets(span, width_for(span.lower, span.upper, rows, rows_per_range))

    def _buckets(self, span: KeySpan, width: int) -> None:
        src, dst = self.both(lambda s: s.digests.bucket_digests(s.table, s.columns, s.span(span.lower, span.upper),
                                                                width))
        buckets = sorted(set(src) | set(dst))
        with self.lock:
            self.found.ranges += len(buckets)
        for b in buckets:
            a, d = src.get(b, (0, 0)), dst.get(b, (0, 0))
            if a == d:
                continue
            sub = bucket_span(span, width, b)
            most = max(a[0], d[0])
            if most <= self.tuning.leaf_rows or width == 1:
                self._rows(sub)
            else:
                self._by_value(sub, most, max(1, -(-most // self.tuning.fanout)))

    def _by_sample(self, span: KeySpan) -> None:
        (n_s, d_s), (n_d, d_d) = self.both(lambda s: s.digests.digest(s.table, s.columns, s.span(span.lower,
                                                                                                span.upper)))
        with self.lock:
            self.found.ranges += 1
        if (n_s, d_s) == (n_d, d_d):
            return
        if max(n_s, n_d) <= self.tuning.leaf_rows:
            self._rows(span)
            return
        parts = self._cut(span, n_s >= n_d, self.tuning.fanout)
        if len(parts) == 1:  # one key value: nothing left to cut
            self._rows(span)
            return
        for part in parts:
            self._by_sample(part)

    def _cut(self, span: KeySpan, from_source: bool, parts: int) -> list[KeySpan]:
        side = self.source if from_source else self.destination
        points = side.digests.split_points(side.table, side.span(span.lower, span.upper), parts)
        points = [p for p in points if (span.lower is None or p > span.lower)]
        return spans_between(span, points)

    # ------------------------------------------------------------ rows

    def _rows(self, span: KeySpan) -> None:
        src, dst = self.both(lambda s: {self._key(r): r for r in s.rows(s.span(span.lower, span.upper))})
        with self.lock:
            for k, row in src.items():
                other = dst.pop(k, None)
                if other is None:
                    self.found.only_source[k] = row
                elif other[1] != row[1]:
                    self.found.different[k] = (row, other)
            self.found.only_destination.update(dst)

    def _key(self, row: Row) -> tuple[str | None, ...]:
        return tuple(row[1][i] for i in self.key_positions)

    def _matched(self) -> Findings:
        """Keys seen on one side in one range and on the other side in another range."""
        f = self.found
        for k in [k for k in f.only_source if k in f.only_destination]:
            row, other = f.only_source.pop(k), f.only_destination.pop(k)
            if row[1] != other[1]:
                f.different[k] = (row, other)
        return f


def differing_columns(names: list[str], a: Row, b: Row) -> list[str]:
    return [n for n, x, y in zip(names, a[1], b[1], strict=True) if x != y]


def key_filters(key: tuple[str, ...], values: tuple[Any, ...], base: tuple[RowFilter, ...]) -> tuple[RowFilter, ...]:
    """Filters that select one key."""
    from copyjob.core.contracts import Bound

    return base + tuple(RowFilter(k, Bound(v, True), Bound(v, True)) for k, v in zip(key, values, strict=True))


RawKeys = tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]


def recheck(source: Side, destination: Side, keys: Sequence[RawKeys]) -> list[tuple[Row | None, Row | None]]:
    """Each key's row on both sides now (``keys``: the raw key on the source and on the destination, either
    may be None when that side lacks it: the other's values are used)."""
    out: list[tuple[Row | None, Row | None]] = []
    for raw_s, raw_d in keys:
        ks = raw_s if raw_s is not None else raw_d
        kd = raw_d if raw_d is not None else raw_s
        assert ks is not None and kd is not None
        a = _one(replace(source, filters=key_filters(source.key, ks, source.filters)))
        b = _one(replace(destination, filters=key_filters(destination.key, kd, destination.filters)))
        out.append((a, b))
    return out


def _one(side: Side) -> Row | None:
    rows = list(side.rows(side.span()))
    return rows[0] if rows else None
