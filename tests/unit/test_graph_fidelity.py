"""Graph fidelity (issue 11): the pure parts. Times with offsets, nested error codes, $batch steps,
claims challenges, Conditional Access, the reauthorizationRequired catch-up decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.graph.times import parse_graph_time, parse_graph_time_or_none

# --- times -------------------------------------------------------------------------------------------


def test_offset_after_seven_fraction_digits_is_kept() -> None:
    parsed = parse_graph_time("2022-01-02T03:12:18.2257768+05:30")
    assert parsed == datetime(2022, 1, 1, 21, 42, 18, 225776, tzinfo=UTC)
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("2024-05-01T10:00:00.1234567Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2024-05-01T10:00:00.1234560+00:00", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2024-05-01T10:00:00-08:00", datetime(2024, 5, 1, 18, tzinfo=UTC)),
    ("2024-05-01T10:00:00.5-0130", datetime(2024, 5, 1, 11, 30, 0, 500000, tzinfo=UTC)),
    ("2024-05-01T10:00:00+01", datetime(2024, 5, 1, 9, tzinfo=UTC)),
    ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),  # no zone: UTC
    ("2024-05-01T10:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
])
def test_graph_time_forms(text: str, expected: datetime) -> None:
    assert parse_graph_time(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2024-05-01", "2024-05-01T10:00:00+24:00",
                                  "2024-13-01T10:00:00Z", "2024-05-01T10:00:00.Z", "2024-05-01T10:00:00+5:30"])
def test_unreadable_times_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_graph_time(text)
    assert parse_graph_time_or_none(text) is None


def test_optional_times() -> None:
    assert parse_graph_time_or_none(None) is None
    assert parse_graph_time_or_none(12) is None
    assert parse_graph_time_or_none("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)


def _format(at: datetime, digits: int, seventh: int) -> str:
    """Graph's way: local wall time, `digits` fraction digits (the 7th a tick below the microsecond)."""
    offset = at.utcoffset()
    assert offset is not None
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{at.microsecond:06d}" + str(seventh)
    if digits:
        text += "." + fraction[:digits]
    if offset == timedelta(0):
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@given(
    at=st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 12, 30)),
    offset_min=st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    digits=st.integers(min_value=0, max_value=7),
    seventh=st.integers(min_value=0, max_value=9),
)
def test_any_aware_time_parses_back_to_the_microsecond(at: datetime, offset_min: int, digits: int,
                                                       seventh: int) -> None:
    local = at.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    kept = 10 ** (6 - min(digits, 6))  # what the written digits can carry
    expected = local.replace(microsecond=local.microsecond // kept * kept)
    parsed = parse_graph_time(_format(local, digits, seventh))
    assert parsed == expected
    assert parsed.tzinfo is UTC
