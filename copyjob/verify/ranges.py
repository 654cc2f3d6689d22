"""Cutting a table's key space into ranges (:class:`KeySpan`): integer keys by value, other keys at boundaries
sampled from the data (every n-th key in key order)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from copyjob.core.contracts import KeySpan


def width_for(lower: int, upper: int, rows: int, rows_per_range: int) -> int:
    """The width of value ranges over ``[lower, upper)`` holding about ``rows_per_range`` rows each."""
    parts = max(1, math.ceil(rows / max(1, rows_per_range)))
    return max(1, math.ceil((upper - lower) / parts))


def bucket_span(span: KeySpan, width: int, bucket: int) -> KeySpan:
    lower = span.lower + bucket * width
    return replace(span, lower=lower, upper=min(lower + width, span.upper))


def spans_between(span: KeySpan, points: Sequence[Any]) -> list[KeySpan]:
    """``span`` cut at ``points`` (increasing, inside it): ``[lower, p1), [p1, p2), …, [pn, upper)``."""
    bounds = [span.lower, *points, span.upper]
    return [replace(span, lower=a, upper=b) for a, b in itertools.pairwise(bounds)]
