"""Dates, times and timestamps that Python's datetime cannot hold, carried exactly in Arrow.

PostgreSQL has ``infinity`` and ``-infinity`` (date, timestamp, timestamptz), dates and timestamps before
year 1 (``0044-03-15 BC``) and after year 9999, and the time ``24:00:00``. Python's ``datetime`` holds none of
them, but Arrow's integer-backed types hold them all, so copyjob carries them in Arrow as:

=====================  ==============================================  =========================================
value                  Arrow                                           why this number
=====================  ==============================================  =========================================
timestamp infinity     timestamp[us] ``2**63 - 1`` (``-(2**63 - 1)``)   DuckDB's own infinity: it reads it as such
date infinity          date32 ``2**31 - 1`` (``-(2**31 - 1)``)          DuckDB's own infinity
BC / year > 9999       the proleptic Gregorian value (1 BC = year 0)   Arrow's calendar; DuckDB's and Parquet's
time 24:00:00         time64[us] ``86_400_000_000``                   PostgreSQL's own binary value
=====================  ==============================================  =========================================

Text in PostgreSQL's spelling (``DateStyle=ISO``, ``TimeZone=UTC``) is parsed here into those integers, and
destinations that store text write them back in the same spelling (:func:`pg_text`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

TIMESTAMP_INFINITY = 2**63 - 1
"""Microseconds since 1970 of ``infinity`` in an Arrow timestamp (``-infinity`` is its negative)."""
DATE_INFINITY = 2**31 - 1
"""Days since 1970 of ``infinity`` in an Arrow date32 (``-infinity`` is its negative)."""
TIME_24 = 86_400_000_000
"""Microseconds of ``24:00:00`` in an Arrow time64[us]."""

US_PER_DAY = 86_400_000_000
_PY_MIN_DAYS = -719_162  # 0001-01-01
_PY_MAX_DAYS = 2_932_896  # 9999-12-31
_PY_MIN_US = _PY_MIN_DAYS * US_PER_DAY
_PY_END_US = (_PY_MAX_DAYS + 1) * US_PER_DAY

_DATETIME = re.compile(
    r"(\d{4,})-(\d\d)-(\d\d)"
    r"(?: (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?)?"
    r"(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?"
    r"( BC)?")
_TIME = re.compile(r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?")


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (astronomical year: 1 BC is year 0)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of :func:`days_from_civil`."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    mp = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return year_of_era + era * 400 + (month <= 2), month, day


# ------------------------------------------------------------ PostgreSQL text → Arrow integers


def parse_date(text: str) -> int:
    """PostgreSQL's text of a date as days since 1970 (infinity as :data:`DATE_INFINITY`)."""
    if text == "infinity":
        return DATE_INFINITY
    if text == "-infinity":
        return -DATE_INFINITY
    found = _match(_DATETIME, text, "date")
    return days_from_civil(_year(found), int(found[2]), int(found[3]))


def parse_timestamp(text: str) -> int:
    """PostgreSQL's text of a timestamp (with or without time zone) as microseconds since 1970 UTC."""
    if text == "infinity":
        return TIMESTAMP_INFINITY
    if text == "-infinity":
        return -TIMESTAMP_INFINITY
    found = _match(_DATETIME, text, "timestamp")
    days = days_from_civil(_year(found), int(found[2]), int(found[3]))
    seconds = int(found[4] or 0) * 3600 + int(found[5] or 0) * 60 + int(found[6] or 0)
    if found[8]:  # an offset: UTC = local - offset
        offset = int(found[9]) * 3600 + int(found[10] or 0) * 60 + int(found[11] or 0)
        seconds -= offset if found[8] == "+" else -offset
    return days * US_PER_DAY + seconds * 1_000_000 + _micros(found[7])


def parse_time(text: str) -> int:
    """PostgreSQL's text of a time (``24:00:00`` included) as microseconds since midnight."""
    found = _match(_TIME, text, "time")
    return (int(found[1]) * 3600 + int(found[2]) * 60 + int(found[3])) * 1_000_000 + _micros(found[4])


def _match(pattern: re.Pattern[str], text: str, what: str) -> re.Match[str]:
    found = pattern.fullmatch(text)
    if found is None:
        raise ValueError(f"not a PostgreSQL {what}: {text!r}")
    return found


def _year(found: re.Match[str]) -> int:
    year = int(found[1])
    return 1 - year if found[12] else year


def _micros(fraction: str | None) -> int:
    return int(fraction.ljust(6, "0")) if fraction else 0


# ------------------------------------------------------------ Arrow integers → PostgreSQL text


def pg_text(kind: str, value: int) -> str:
    """PostgreSQL's spelling of an Arrow date (days), time or timestamp (µs) value of logical ``kind``."""
    if kind == "time":
        seconds, micros = divmod(value, 1_000_000)
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" + _fraction(micros)
    limit = DATE_INFINITY if kind == "date" else TIMESTAMP_INFINITY
    if value in (limit, -limit):
        return "infinity" if value > 0 else "-infinity"
    days, micros = (value, 0) if kind == "date" else divmod(value, US_PER_DAY)
    year, month, day = civil_from_days(days)
    text = f"{year if year > 0 else 1 - year:04d}-{month:02d}-{day:02d}"
    if kind != "date":
        text += " " + pg_text("time", micros)
        if kind == "timestamptz":
            text += "+00"
    return text + (" BC" if year <= 0 else "")


def _fraction(micros: int) -> str:
    return f".{micros:06d}".rstrip("0") if micros else ""


# ------------------------------------------------------------ finding them in Arrow columns


def beyond_python(array: pa.Array) -> pa.Array | None:
    """A boolean mask of the values of a date, time or timestamp array that Python's datetime cannot hold
    (infinities, BC, after 9999, 24:00), or None when there are none (or the array has another type)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pt

    if pt.is_timestamp(array.type):
        ints, low, end = array.cast(pa.timestamp("us", tz=array.type.tz), safe=False).view(pa.int64()), \
            _PY_MIN_US, _PY_END_US
    elif pt.is_date32(array.type):
        ints, low, end = array.view(pa.int32()), _PY_MIN_DAYS, _PY_MAX_DAYS + 1
    elif pt.is_time64(array.type) and array.type.unit == "us":
        ints, low, end = array.view(pa.int64()), 0, TIME_24
    else:
        return None
    mask = pc.fill_null(pc.or_(pc.less(ints, low), pc.greater_equal(ints, end)), False)
    return mask if pc.any(mask).as_py() else None


def kind_of(array: pa.Array) -> str:
    """The logical kind (``date``, ``time``, ``timestamp``, ``timestamptz``) of a temporal Arrow array."""
    import pyarrow.types as pt

    if pt.is_timestamp(array.type):
        return "timestamptz" if array.type.tz else "timestamp"
    return "date" if pt.is_date(array.type) else "time"


def integers(array: pa.Array) -> list[int | None]:
    """The values of a date (days), time or timestamp (µs) array as integers."""
    import pyarrow as pa
    import pyarrow.types as pt

    if pt.is_timestamp(array.type):
        return array.cast(pa.timestamp("us", tz=array.type.tz), safe=False).view(pa.int64()).to_pylist()
    return array.view(pa.int32() if pt.is_date32(array.type) else pa.int64()).to_pylist()


def as_pg_text(array: pa.Array) -> pa.Array:
    """A temporal array as strings: the values :func:`beyond_python` finds in PostgreSQL's spelling, the others
    as Arrow casts them (``2026-01-02 03:04:05.000000``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = beyond_python(array)
    if mask is None:
        return array.cast(pa.string())
    kind = kind_of(array)
    special = pa.array([pg_text(kind, v) if m and v is not None else None
                        for v, m in zip(integers(array), mask.to_pylist(), strict=True)], pa.string())
    ordinary = pc.if_else(mask, pa.scalar(None, array.type), array).cast(pa.string())
    return pc.if_else(mask, special, ordinary)
