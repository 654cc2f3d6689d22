"""PostgreSQL's dates, times and timestamps that Python cannot hold, as Arrow integers and back to text."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from copyjob.core import temporal

EPOCH = dt.date(1970, 1, 1)


@pytest.mark.parametrize("day", [dt.date(1, 1, 1), dt.date(1970, 1, 1), dt.date(2000, 2, 29), dt.date(9999, 12, 31),
                                 dt.date(1582, 10, 15), dt.date(1969, 12, 31)])
def test_civil_days_agree_with_python_where_python_has_the_date(day: dt.date) -> None:
    days = (day - EPOCH).days
    assert temporal.days_from_civil(day.year, day.month, day.day) == days
    assert temporal.civil_from_days(days) == (day.year, day.month, day.day)


@pytest.mark.parametrize(("kind", "text", "value"), [
    ("date", "infinity", temporal.DATE_INFINITY),
    ("date", "-infinity", -temporal.DATE_INFINITY),
    ("date", "0001-12-31 BC", -719_163),  # the day before 0001-01-01
    ("date", "0044-03-15 BC", -735_160),
    ("date", "12345-06-07", 3_789_548),
    ("timestamp", "infinity", temporal.TIMESTAMP_INFINITY),
    ("timestamp", "-infinity", -temporal.TIMESTAMP_INFINITY),
    ("timestamp", "0044-03-15 12:30:00.5 BC", -63_517_778_999_500_000),
    ("timestamptz", "0044-03-15 12:30:00.5+00 BC", -63_517_778_999_500_000),
    ("timestamptz", "12345-06-07 01:02:03.000001+00", 327_416_950_923_000_001),
    ("time", "24:00:00", temporal.TIME_24),
])
def test_postgresql_text_round_trips_through_arrow_integers(kind: str, text: str, value: int) -> None:
    parse = {"date": temporal.parse_date, "time": temporal.parse_time}.get(kind, temporal.parse_timestamp)
    assert parse(text) == value
    assert temporal.pg_text(kind, value) == text


def test_an_offset_is_converted_to_utc() -> None:
    assert temporal.parse_timestamp("2026-06-01 12:00:00+05:30") == \
        int(dt.datetime(2026, 6, 1, 6, 30, tzinfo=dt.UTC).timestamp()) * 1_000_000


def test_text_that_is_no_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL timestamp"):
        temporal.parse_timestamp("yesterday")


def test_only_the_values_python_cannot_hold_are_found_and_spelt_as_postgresql_does() -> None:
    array = pa.array([0, temporal.TIMESTAMP_INFINITY, None, -63_517_778_999_500_000], pa.timestamp("us"))
    mask = temporal.beyond_python(array)
    assert mask is not None and mask.to_pylist() == [False, True, False, True]
    assert temporal.as_pg_text(array).to_pylist() == [
        "1970-01-01 00:00:00.000000", "infinity", None, "0044-03-15 12:30:00.5 BC"]
    assert temporal.beyond_python(pa.array([0, 1], pa.date32())) is None
    assert temporal.as_pg_text(pa.array([temporal.TIME_24], pa.time64("us"))).to_pylist() == ["24:00:00"]
